"""Waiting for dependencies at start, with a deadline and a clear log."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["retry_until"]

log = logging.getLogger(__name__)
T = TypeVar("T")


async def retry_until(action: Callable[[], Awaitable[T]], *, what: str, timeout: float,
                      give_up_on: tuple[type[BaseException], ...] = ()) -> T:
    """Run ``action`` until it succeeds or ``timeout`` seconds passed (then re-raise).

    Errors of the types in ``give_up_on`` are mistakes, not outages: raised at once.
    """
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return await action()
        except give_up_on:
            raise
        except Exception as exc:
            if time.monotonic() + delay > deadline:
                log.error("%s failed for %.0fs, giving up: %s", what, timeout, exc)
                raise
            log.warning("%s not possible yet (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
