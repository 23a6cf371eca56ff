"""RunTransitions against the shared stack's Postgres (``app.create_run``,
``app.finish_run``, ``app.top_up``) and a Redis of its own: every outcome of a
creation, and an ending that lets the thread's next run go. Nothing is appended to
the stack's queue (``Dispatch.send`` is never called): its worker runs nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from redis.asyncio import Redis

from backend.runs import RunTransitions
from backend.store import Store
from bridge.registry import ThreadRunRegistry
from e2e.stack import LocalStack
from servicekit import ProblemError
from servicekit.rediskeys import UserKeys


@pytest.fixture
async def pool(stack: LocalStack) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def user() -> str:
    return f"usr_runs_{uuid.uuid4().hex}"


def _transitions(pool: asyncpg.Pool, redis: Redis, *, max_active: int = 20,
                 max_waiting: int = 10, window: int = 4) -> RunTransitions:
    return RunTransitions(Store(pool), redis, ThreadRunRegistry(redis),
                          max_active_per_user=max_active, max_waiting_per_thread=max_waiting,
                          dispatch_window=window)


async def _problem(transitions: RunTransitions, *args: str) -> ProblemError:
    with pytest.raises(ProblemError) as raised:
        await transitions.create(*args)  # type: ignore[arg-type]
    return raised.value


async def test_a_run_on_a_free_thread_is_created_and_dispatched(
        pool: asyncpg.Pool, redis: Redis, user: str) -> None:
    runs = _transitions(pool, redis)
    thread = await Store(pool).create_thread(user, "t")
    created = await runs.create(user, thread["id"], "what is 2 + 2", "supervisor")
    assert created.run["status"] == "queued" and created.run["input"] == "what is 2 + 2"
    assert [row["id"] for row in created.dispatch.rows] == [created.run["id"]]
    assert created.interrupt == ()
    messages, _ = await Store(pool).messages(user, thread["id"], 10, None)
    assert [(m["role"], m["content"], m["run_id"]) for m in messages] == [
        ("user", "what is 2 + 2", created.run["id"])]


async def test_another_users_thread_is_not_found(pool: asyncpg.Pool, redis: Redis,
                                                 user: str) -> None:
    thread = await Store(pool).create_thread(user, "t")
    problem = await _problem(_transitions(pool, redis), "usr_someone_else", thread["id"], "hi",
                             "supervisor")
    assert (problem.status, problem.code) == (404, "not_found")


async def test_a_busy_thread_per_policy(pool: asyncpg.Pool, redis: Redis, user: str) -> None:
    runs = _transitions(pool, redis, max_waiting=1)
    thread = await Store(pool).create_thread(user, "t")
    first = (await runs.create(user, thread["id"], "one", "supervisor")).run
    problem = await _problem(runs, user, thread["id"], "two", "supervisor")
    assert (problem.status, problem.code) == (409, "thread_busy") and first["id"] in problem.detail
    queued = await runs.create(user, thread["id"], "two", "supervisor", "enqueue")
    assert queued.dispatch.rows == [] and queued.interrupt == ()  # waits for the first
    problem = await _problem(runs, user, thread["id"], "three", "supervisor", "enqueue")
    assert (problem.status, problem.code) == (429, "too_many_runs")
    assert "wait on one thread" in problem.detail


async def test_interrupt_names_the_live_runs(pool: asyncpg.Pool, redis: Redis,
                                            user: str) -> None:
    runs = _transitions(pool, redis)
    thread = await Store(pool).create_thread(user, "t")
    first = (await runs.create(user, thread["id"], "one", "supervisor")).run
    second = await runs.create(user, thread["id"], "two", "supervisor", "interrupt")
    assert second.interrupt == (first["id"],) and second.dispatch.rows == []


async def test_a_run_whose_end_redis_holds_no_longer_makes_the_thread_busy(
        pool: asyncpg.Pool, redis: Redis, user: str) -> None:
    """Its record still says running (the lifecycle lags): Redis is asked outside
    the locks, and the creation is tried again with its answer."""
    runs = _transitions(pool, redis)
    thread = await Store(pool).create_thread(user, "t")
    first = (await runs.create(user, thread["id"], "one", "supervisor")).run
    await redis.hset(UserKeys(user).run(first["id"]), "done", "1")
    second = await runs.create(user, thread["id"], "two", "supervisor")
    assert [row["id"] for row in second.dispatch.rows] == [second.run["id"]]


async def test_the_users_active_runs_are_limited(pool: asyncpg.Pool, redis: Redis,
                                                 user: str) -> None:
    runs = _transitions(pool, redis, max_active=2)
    for n in range(2):
        thread = await Store(pool).create_thread(user, f"t{n}")
        await runs.create(user, thread["id"], "go", "supervisor")
    thread = await Store(pool).create_thread(user, "t2")
    problem = await _problem(runs, user, thread["id"], "go", "supervisor")
    assert (problem.status, problem.code) == (429, "too_many_runs")
    assert problem.headers == {"Retry-After": "5"}


async def test_the_window_holds_runs_back_and_an_ending_lets_the_next_go(
        pool: asyncpg.Pool, redis: Redis, user: str) -> None:
    runs = _transitions(pool, redis, window=1)
    threads = [await Store(pool).create_thread(user, f"t{n}") for n in range(2)]
    first = await runs.create(user, threads[0]["id"], "one", "supervisor")
    second = await runs.create(user, threads[1]["id"], "two", "supervisor")
    assert first.dispatch.rows and not second.dispatch.rows  # the window is full
    finished = await runs.finish(first.run["id"], "agent_completed",
                                 {"result": "done", "duration_ms": 5, "tool_calls": 1},
                                 datetime.now(UTC))
    assert finished.row is not None and finished.row["status"] == "succeeded"
    assert [row["id"] for row in finished.dispatch.rows] == [second.run["id"]]
    again = await runs.finish(first.run["id"], "agent_completed", {"result": "done"},
                              datetime.now(UTC))
    assert again.row is None and again.dispatch.rows == []  # final already
    messages, _ = await Store(pool).messages(user, threads[0]["id"], 10, None)
    assert [(m["role"], m["content"]) for m in messages] == [("user", "one"),
                                                             ("assistant", "done")]
