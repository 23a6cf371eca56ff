"""The reaper looks at every running run, a page at a time (real Postgres of the
shared stack): runs that wait long never hide the others from the sweep."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from redis.asyncio import Redis

from backend.reaper import Reaper
from backend.runs import RunTransitions
from backend.store import Store
from bridge.emitter import EventEmitter
from bridge.events import utc_timestamp
from bridge.registry import ThreadRunRegistry
from e2e.stack import LocalStack
from servicekit.redisclient import make_redis
from servicekit.rediskeys import UserKeys


async def test_every_running_run_is_swept_whatever_the_page(stack: LocalStack) -> None:
    conn = await asyncpg.connect(stack.database_url)
    user, thread = f"usr_reap_{uuid.uuid4().hex}", f"thr_reap_{uuid.uuid4().hex}"
    start = datetime.now(UTC) - timedelta(days=3650)  # older than any other running run
    ids = [f"run_reap_{uuid.uuid4().hex}" for _ in range(5)]
    try:
        await conn.execute("INSERT INTO app.threads (id, user_id, title) VALUES ($1, $2, '')",
                           thread, user)
        for n, run_id in enumerate(ids):  # two share a start: the id orders them
            await conn.execute(
                "INSERT INTO app.runs (id, thread_id, user_id, agent, status, input, "
                "created_at, started_at, dispatched_at) "
                "VALUES ($1, $2, $3, 'supervisor', 'running', 'q', $4, $4, $4)",
                run_id, thread, user, start + timedelta(seconds=min(n, 3)))
        pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
        try:
            reaper: Any = Reaper.__new__(Reaper)  # only its Postgres side is used here
            reaper._pool = pool
            found = [r["id"] for r in await reaper._running(page=2) if r["user_id"] == user]
        finally:
            await pool.close()
        assert found == ids[:3] + sorted(ids[3:])
    finally:
        await conn.execute("DELETE FROM app.threads WHERE id = $1", thread)
        await conn.close()


async def test_the_lock_stays_with_the_replica_that_sweeps(redis: Redis) -> None:
    """One replica keeps the reaper's lock while it sweeps (its grace timers are its
    own), and another takes it once the holder stopped sweeping."""
    first: Any = Reaper.__new__(Reaper)  # only the lock is used here
    second: Any = Reaper.__new__(Reaper)
    for reaper, token in ((first, "a"), (second, "b")):
        reaper._redis, reaper._interval_s, reaper._token = redis, 0.1, token
    assert await first._hold_lock()
    for _ in range(4):  # longer than a lock that lapses after one interval would live
        await asyncio.sleep(0.1)
        assert not await second._hold_lock()
        assert await first._hold_lock()
    await asyncio.sleep(0.3)  # the first stopped: its lock lapses after 2.5 intervals
    assert await second._hold_lock()
    assert not await first._hold_lock()


async def test_a_run_ended_in_redis_but_not_in_its_record_gets_its_stored_end(
        stack: LocalStack) -> None:
    """The run's end is in its Redis hash but its lifecycle entry never arrived (on a
    Redis Cluster the entry is appended after the event, on another slot): the
    reaper, finding the run without a worker, applies the stored end rather than
    declaring the run lost."""
    conn = await asyncpg.connect(stack.database_url)
    user, thread = f"usr_relay_{uuid.uuid4().hex}", f"thr_relay_{uuid.uuid4().hex}"
    run_id = f"run_relay_{uuid.uuid4().hex}"
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=4)
    redis = make_redis(stack.redis_url)
    try:
        await conn.execute("INSERT INTO app.threads (id, user_id, title) VALUES ($1, $2, '')",
                           thread, user)
        await conn.execute(
            "INSERT INTO app.runs (id, thread_id, user_id, agent, status, input, "
            "created_at, started_at, dispatched_at) "
            "VALUES ($1, $2, $3, 'supervisor', 'running', 'q', now(), now(), now())",
            run_id, thread, user)
        ended = utc_timestamp()
        await redis.hset(UserKeys(user).run(run_id), mapping={
            "n": 3, "done": "1", "end": "agent_completed", "et": ended,
            "ep": json.dumps({"result": "391", "duration_ms": 12, "tool_calls": 1})})
        runs = RunTransitions(Store(pool), redis, ThreadRunRegistry(redis))
        reaper = Reaper(runs, redis, EventEmitter(redis), grace_s=0)
        running = [r for r in await reaper._running() if r["id"] == run_id]
        assert await reaper.reap(running, now=0.0) == []  # not declared lost
        row = await conn.fetchrow("SELECT status, result FROM app.runs WHERE id = $1", run_id)
        assert (row["status"], row["result"]) == ("succeeded", "391")
        assert await redis.hget(UserKeys(user).run(run_id), "end") == b"agent_completed"
    finally:
        await redis.aclose()
        await pool.close()
        await conn.execute("DELETE FROM app.threads WHERE id = $1", thread)
        await conn.close()
