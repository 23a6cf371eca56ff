"""The bounded Argon2id pool: a full lane answers Busy at once, lanes are apart."""

from __future__ import annotations

import asyncio
import threading

import pytest

from auth.hashpool import Busy, HashPool, LaneLimits


async def test_a_full_lane_is_busy_and_the_other_lane_is_not() -> None:
    pool = HashPool(2, {"login": LaneLimits(budget=2, parallel=2),
                        "register": LaneLimits(budget=1, parallel=1)})
    release = threading.Event()
    try:
        stuck = asyncio.ensure_future(pool.run("register", lambda: release.wait(5)))
        await asyncio.sleep(0.05)
        with pytest.raises(Busy) as caught:
            await pool.run("register", lambda: True)
        assert caught.value.status == 503 and caught.value.code == "busy"
        assert caught.value.headers == {"Retry-After": "1"}
        assert await pool.run("login", lambda: "checked") == "checked"  # its own budget
        release.set()
        assert await stuck is True
        assert pool.admitted("register") == 0
    finally:
        release.set()
        pool.close()


async def test_a_lane_runs_at_most_its_parallel_jobs() -> None:
    pool = HashPool(4, {"login": LaneLimits(budget=10, parallel=4),
                        "register": LaneLimits(budget=10, parallel=1)})
    running, peak = 0, 0
    lock = threading.Lock()

    def job() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        threading.Event().wait(0.02)
        with lock:
            running -= 1

    try:
        await asyncio.gather(*(pool.run("register", job) for _ in range(6)))
        assert peak == 1
    finally:
        pool.close()
