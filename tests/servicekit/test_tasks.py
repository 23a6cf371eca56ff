"""cancel_and_wait: tasks stop, even one that swallows its first cancellation."""

from __future__ import annotations

import asyncio
import logging

import pytest

from servicekit.tasks import cancel_and_wait


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # as a library racing with its own timeout may

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, again_after_s=0.05), 5)
    assert task.cancelled() and swallowed == 1


async def test_ended_tasks_and_failures(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("broken")

    done = asyncio.create_task(asyncio.sleep(0))
    failed = asyncio.create_task(fails(), name="failing")
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.ERROR):
        await cancel_and_wait(done, failed)
    assert done.done() and not done.cancelled()
    assert "failing" in caplog.text and "broken" in caplog.text
