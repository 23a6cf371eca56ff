"""The worker's fair choice against a real redis-server: runs start in the fair
share's order, and what the worker read but did not start goes back to the end of
the queue at once, for any worker."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from agents.builtin import builtin_agents
from agents.config import WorkerSettings
from agents.worker import Worker
from bridge.groups import read_group
from bridge.queue import RunRequest
from servicekit.rediskeys import RUN_QUEUE, WORKER_GROUP

LONG = "ticks 200 every 50ms"  # 10 s: still running when the worker stops


async def _queue(redis: Redis, user: str, n: int) -> str:
    run_id = f"run_fs_{user}{n}"
    await redis.xadd(RUN_QUEUE, RunRequest(run_id=run_id, user_id=f"usr_fs_{user}",
                                           thread_id=f"thr_fs_{user}{n}", agent="ticker",
                                           input=LONG).fields())
    return run_id


async def test_runs_start_in_turns_and_unstarted_ones_go_back_to_the_queue(redis: Redis) -> None:
    settings = WorkerSettings(worker_id="worker-fs", concurrency=2, max_user_share=0.5,
                              read_ahead=10, shutdown_grace_s=0, claim_idle_s=30)
    worker = Worker(settings, redis, builtin_agents(settings))
    heavy = [await _queue(redis, "a", n) for n in range(4)]
    light = await _queue(redis, "b", 0)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):  # up to 10 s
            if len(worker._running) == 2:
                break
            await asyncio.sleep(0.05)
        # one slot each: the light user's run did not wait behind the heavy backlog
        assert set(worker._running) == {heavy[0], light}
        await asyncio.sleep(0.3)
        assert set(worker._running) == {heavy[0], light}
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)
    # the three not started are back in the queue, in their order, for any worker
    again = await read_group(redis, RUN_QUEUE, WORKER_GROUP, "worker-other", count=10)
    assert [RunRequest.from_fields(f).run_id for _, f in again] == heavy[1:]
    pending = await redis.xpending(RUN_QUEUE, WORKER_GROUP)
    assert pending["pending"] == 3  # the other worker's three; the stopped one holds none


async def test_a_done_runs_entry_leaves_the_queue(redis: Redis) -> None:
    settings = WorkerSettings(worker_id="worker-done", concurrency=2, shutdown_grace_s=0)
    worker = Worker(settings, redis, builtin_agents(settings))
    for n in range(3):
        await redis.xadd(RUN_QUEUE, RunRequest(run_id=f"run_done{n}", user_id="usr_done",
                                               thread_id=f"thr_done{n}", agent="ticker",
                                               input="ticks 1").fields())
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):  # up to 10 s
            if worker.completed == 3:
                break
            await asyncio.sleep(0.05)
        assert worker.completed == 3
        # acknowledged and deleted: the queue holds only runs not yet done
        assert await redis.xlen(RUN_QUEUE) == 0
        assert (await redis.xpending(RUN_QUEUE, WORKER_GROUP))["pending"] == 0
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)
