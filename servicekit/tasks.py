"""Stopping a service's background tasks, even those that swallow a cancellation.

A cancellation can be lost on its way into a task: redis-py's blocking reads
(``XREADGROUP ... BLOCK``) can swallow one that races with their own read timeout,
and Python 3.11's ``asyncio.wait_for`` one that races with its inner result. A
task cancelled once and awaited would then keep a shutdown (or a test) waiting
forever; :func:`cancel_and_wait` asks again until each task ended.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["cancel_and_wait"]

log = logging.getLogger(__name__)


async def cancel_and_wait(*tasks: asyncio.Task[Any], again_after_s: float = 0.5) -> None:
    """Cancel the tasks and return once every one ended, cancelling again those
    still running every ``again_after_s``. A task that ended with an error (not a
    cancellation) is logged: the caller's shutdown goes on."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_after_s)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s had failed: %r", task.get_name(), task.exception())
