"""Multitask policies: reject, enqueue (in order, after the active run), interrupt."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from e2e.checks import check_all
from e2e.client import ApiError, ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email


@pytest.fixture
async def client(target: Target) -> AsyncIterator[ChatClient]:
    async with ChatClient(target.auth_url, target.backend_url) as user:
        await user.signup(unique_email("multi"), PASSWORD)
        yield user


async def test_reject_refuses_a_second_run(client: ChatClient) -> None:
    thread = await client.create_thread()
    first = await client.start_run(thread["id"], "ticks 20 every 20ms", agent="ticker")
    with pytest.raises(ApiError) as caught:
        await client.start_run(thread["id"], "what is 1 + 1")
    assert caught.value.status == 409 and caught.value.code == "thread_busy"
    assert (await client.wait_run(first["id"]))["status"] == "succeeded"


async def test_enqueue_runs_after_the_active_one_in_order(client: ChatClient,
                                                          target: Target) -> None:
    socket = await client.connect(target.ws_url)
    try:
        thread = await client.create_thread()
        runs = [await client.start_run(thread["id"], "ticks 15 every 20ms", agent="ticker")]
        for text in ("what is 2 * 2", "what is 3 * 3"):
            runs.append(await client.start_run(thread["id"], text, multitask="enqueue"))
        finals = [await client.wait_run(run["id"], timeout=30) for run in runs]
        assert [f["status"] for f in finals] == ["succeeded"] * 3
        for earlier, later in itertools.pairwise(finals):
            assert later["started_at"] >= earlier["finished_at"]
        await socket.wait_terminal(runs[-1]["id"])
        order = [e["run_id"] for e in socket.events if e["type"] == "agent_started"]
        assert order == [run["id"] for run in runs]
        assert check_all(socket.events, {r["id"] for r in runs}, client.user["id"]) == []
        contents = [m["content"] for m in await client.messages(thread["id"])]
        assert contents == ["ticks 15 every 20ms", "what is 2 * 2", "what is 3 * 3",
                            "streamed 15 ticks", "2 * 2 = 4", "3 * 3 = 9"]
    finally:
        await socket.close()


async def test_interrupt_cancels_the_active_run_then_starts(client: ChatClient,
                                                            target: Target) -> None:
    socket = await client.connect(target.ws_url)
    try:
        thread = await client.create_thread()
        first = await client.start_run(thread["id"], "ticks 500 every 20ms", agent="ticker")
        await socket.wait_for(lambda f: f.get("type") == "partial_result")
        second = await client.start_run(thread["id"], "what is 6 * 7", multitask="interrupt")
        cancelled = await socket.wait_terminal(first["id"], timeout=10)
        assert cancelled["type"] == "agent_cancelled" and cancelled["payload"] == {
            "by": "interrupt"}
        done = await socket.wait_terminal(second["id"], timeout=15)
        assert done["payload"]["result"] == "6 * 7 = 42"
        assert (await client.wait_run(first["id"]))["status"] == "cancelled"
        assert (await client.wait_run(second["id"]))["status"] == "succeeded"
    finally:
        await socket.close()
