"""A bounded pool for Argon2id work, with a separate budget per lane.

Argon2id is deliberately slow (tens of milliseconds of one core, 19 MiB), so the
work runs on a few threads of its own (argon2-cffi releases the GIL) and a flood
must not line up without end: each lane admits at most ``budget`` jobs at once
(running or waiting); one more answers ``503 busy`` with ``Retry-After``
(:class:`Busy`) at once, without hashing anything.

Fairness: logins and registrations are separate lanes. A registration flood
fills only its own, small, budget, and holds at most half the threads at any
moment (at least one: a lane's jobs beyond its ``parallel`` wait in the lane,
outside the pool), so logins always find the other half and a queue of their
own; they never wait behind the flood.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, TypeVar

from servicekit import ProblemError

__all__ = ["Busy", "HashPool", "Lane", "LaneLimits"]

Lane = Literal["login", "register"]
T = TypeVar("T")

#: seconds a client is told to wait when a lane is full: a full lane drains in
#: about budget x 50 ms / threads, a second or two at the defaults
BUSY_RETRY_AFTER_S = 1


class Busy(ProblemError):
    def __init__(self, lane: Lane) -> None:
        super().__init__(503, "busy", f"too many {lane}s are waiting for a password check; "
                         f"retry in {BUSY_RETRY_AFTER_S} s",
                         {"Retry-After": str(BUSY_RETRY_AFTER_S)})


@dataclass(frozen=True)
class LaneLimits:
    budget: int  # jobs admitted at once, running or waiting
    parallel: int  # jobs of the lane running at once


class _LaneState:
    def __init__(self, limits: LaneLimits) -> None:
        self.limits = limits
        self.admitted = 0
        self.running = asyncio.Semaphore(limits.parallel)


class HashPool:
    def __init__(self, threads: int, lanes: Mapping[Lane, LaneLimits]) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")
        self._limits = dict(lanes)
        self._lanes: dict[Lane, _LaneState] = {}

    def _lane(self, lane: Lane) -> _LaneState:
        # built on first use: the semaphore belongs to the running loop
        if lane not in self._lanes:
            self._lanes[lane] = _LaneState(self._limits[lane])
        return self._lanes[lane]

    def admitted(self, lane: Lane) -> int:
        return self._lane(lane).admitted

    async def run(self, lane: Lane, work: Callable[[], T]) -> T:
        """``work()`` on a pool thread; :class:`Busy` at once when the lane is full."""
        state = self._lane(lane)
        if state.admitted >= state.limits.budget:
            raise Busy(lane)
        state.admitted += 1
        try:
            async with state.running:
                return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        finally:
            state.admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
