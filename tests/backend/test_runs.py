"""RunTransitions against the shared stack's Postgres (``app.create_run``,
``app.finish_run``, ``app.top_up``, their batches ``app.create_runs`` and
``app.finish_runs``, and ``app.start_runs``) and a Redis of its own: every outcome
of a creation, alone and among concurrent ones, and starts and endings that let
the next runs go. Nothing is appended to the stack's queue (``Dispatch.send`` is
never called): its worker runs nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from redis.asyncio import Redis

from backend.runs import Ending, RunTransitions
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


async def test_concurrent_creations_share_statements_and_keep_each_outcome(
        pool: asyncpg.Pool, redis: Redis, user: str) -> None:
    """Thirty requests at once, of two users: each gets the answer it would have
    had alone (created, dispatched within the window, the user's limit, another
    user's thread), in fewer statements than requests."""
    runs = _transitions(pool, redis, max_active=12, window=4)
    other = f"{user}_b"
    mine = [await Store(pool).create_thread(user, f"t{n}") for n in range(15)]
    theirs = [await Store(pool).create_thread(other, f"t{n}") for n in range(10)]
    requests = ([(user, t["id"]) for t in mine] + [(other, t["id"]) for t in theirs]
                + [(user, theirs[0]["id"])] * 5)  # not mine: not found
    outcomes = await asyncio.gather(
        *(runs.create(owner, thread, f"go {n}", "supervisor")
          for n, (owner, thread) in enumerate(requests)), return_exceptions=True)
    assert runs._creations.batches < len(requests)
    code = [getattr(o, "code", "created") for o in outcomes]
    assert sorted(code[:15]) == ["created"] * 12 + ["too_many_runs"] * 3  # mine
    assert code[15:25] == ["created"] * 10  # theirs
    assert code[25:] == ["not_found"] * 5  # theirs, asked by me
    created = [o for o in outcomes if not isinstance(o, BaseException)]
    for owner in (user, other):  # the window: four of each user's runs dispatched
        assert sum(bool(c.dispatch.rows) for c in created if c.user_id == owner) == 4
    assert await pool.fetchval("SELECT count(*) FROM app.runs WHERE user_id = ANY($1)",
                               [user, other]) == 22


async def test_a_creation_that_fails_fails_alone(pool: asyncpg.Pool, redis: Redis,
                                                 user: str) -> None:
    """A value Postgres refuses (a NUL character) fails its batch: each creation is
    then made alone, and only that one fails."""
    runs = _transitions(pool, redis)
    threads = [await Store(pool).create_thread(user, f"t{n}") for n in range(6)]
    texts = ["fine", "fine", "bad \x00 input", "fine", "fine", "fine"]
    outcomes = await asyncio.gather(
        *(runs.create(user, t["id"], text, "supervisor") for t, text in zip(
            threads, texts, strict=True)), return_exceptions=True)
    failed = [n for n, o in enumerate(outcomes) if isinstance(o, BaseException)]
    assert failed == [2], outcomes
    assert runs._creations.batches < len(threads)  # they went together first
    assert isinstance(outcomes[2], asyncpg.PostgresError)
    assert await pool.fetchval("SELECT count(*) FROM app.runs WHERE user_id = $1", user) == 5


async def test_endings_applied_together(pool: asyncpg.Pool, redis: Redis,
                                        user: str) -> None:
    """Endings of one lifecycle batch in one transaction: each its record, the
    runs they let go dispatched once; an unknown run and a repeated ending change
    nothing."""
    runs = _transitions(pool, redis, window=2)
    threads = [await Store(pool).create_thread(user, f"t{n}") for n in range(4)]
    created = [await runs.create(user, t["id"], f"run {n}", "supervisor")
               for n, t in enumerate(threads)]
    assert [bool(c.dispatch.rows) for c in created] == [True, True, False, False]
    now = datetime.now(UTC)
    done = {"result": "done", "duration_ms": 5, "tool_calls": 0}
    endings = [Ending(created[0].run["id"], "agent_completed", done, now),
               Ending(created[1].run["id"], "agent_failed",
                      {"error": {"code": "boom", "message": "no"}, "cause": "error"}, now),
               Ending("run_unknown", "agent_completed", done, now),
               Ending(created[0].run["id"], "agent_completed", done, now)]
    finished = await runs.finish_all(endings)
    assert [f.row["status"] if f.row else None for f in finished] == [
        "succeeded", "failed", None, None]
    dispatched = [row["id"] for f in finished for row in f.dispatch.rows]
    assert sorted(dispatched) == sorted(c.run["id"] for c in created[2:])
    messages, _ = await Store(pool).messages(user, threads[0]["id"], 10, None)
    assert [(m["role"], m["content"]) for m in messages] == [("user", "run 0"),
                                                             ("assistant", "done")]


async def test_starts_mark_runs_running_and_let_the_next_go(
        pool: asyncpg.Pool, redis: Redis, user: str) -> None:
    """Starts of two users at once: each started run is running, each user's freed
    places go to that user's waiting runs (the window counts runs not yet started);
    a start of a run that ended, or of no run, changes nothing."""
    runs = _transitions(pool, redis, window=2)
    other = f"{user}_b"
    created = {u: [await runs.create(u, (await Store(pool).create_thread(u, f"t{n}"))["id"],
                                     f"run {n}", "supervisor") for n in range(4)]
               for u in (user, other)}
    for mine in created.values():
        assert [bool(c.dispatch.rows) for c in mine] == [True, True, False, False]
    now = datetime.now(UTC)
    ended = created[other][1].run["id"]
    await runs.finish(ended, "agent_completed", {"result": "done"}, now)
    dispatch = await runs.start([(created[user][0].run["id"], now),
                                 (created[other][0].run["id"], now), (ended, now),
                                 ("run_unknown", now)])
    # user: one place freed (a run started); other: two (one started, one ended)
    assert sorted(row["id"] for row in dispatch.rows) == sorted(
        [created[user][2].run["id"], created[other][3].run["id"]])
    statuses = dict(await pool.fetch("SELECT id, status FROM app.runs WHERE user_id = ANY($1)",
                                     [user, other]))
    assert statuses[created[user][0].run["id"]] == "running"
    assert statuses[created[other][0].run["id"]] == "running"
    assert statuses[ended] == "succeeded"  # a late start never reopens an end
    assert (await runs.start([])).rows == []
    again = await runs.start([(created[user][0].run["id"], now)])  # started already
    assert again.rows == []


async def test_batches_on_the_same_threads_and_users_never_deadlock(
        pool: asyncpg.Pool, redis: Redis, user: str) -> None:
    """Creations, starts and endings of overlapping threads and users, at once and
    in every order, in batches and alone: all of them apply (Postgres would abort
    one of a lock cycle with deadlock_detected)."""
    runs = _transitions(pool, redis, max_active=100, max_waiting=100, window=3)
    users = [f"{user}_{n}" for n in range(3)]
    threads = [(u, (await Store(pool).create_thread(u, "t"))["id"])
               for u in users for _ in range(3)]
    first = await asyncio.gather(*(runs.create(u, t, "one", "supervisor", "enqueue")
                                   for u, t in threads))
    now = datetime.now(UTC)
    done = {"result": "done"}
    for _ in range(3):
        endings = [Ending(c.run["id"], "agent_completed", done, now) for c in first]
        starts = [(c.run["id"], now) for c in first]
        results = await asyncio.gather(
            runs.finish_all(endings[::2]), runs.finish_all(endings[1::2][::-1]),
            runs.start(starts[::-1]), runs.start(starts[1::2]),
            *(runs.create(u, t, "again", "supervisor", "enqueue")
              for u, t in reversed(threads)), return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        first = results[4:]  # type: ignore[assignment]
    assert await pool.fetchval("SELECT count(*) FROM app.runs WHERE user_id = ANY($1)",
                               users) == 4 * len(threads)


async def test_a_batch_naming_another_users_thread_never_waits_for_or_holds_it(
        pool: asyncpg.Pool, redis: Redis, user: str) -> None:
    """``app.create_runs`` answers ``not_found`` for a thread that is not the
    requester's without touching its lock: held elsewhere, the batch does not wait;
    and no batch holds a victim's thread while the rest of it runs."""
    victim = f"{user}_victim"
    theirs = await Store(pool).create_thread(victim, "t")
    mine = await Store(pool).create_thread(user, "t")
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM app.threads WHERE id = $1 FOR UPDATE", theirs["id"])
        rows = await asyncio.wait_for(pool.fetch(
            "SELECT idx, outcome FROM app.create_runs($1, $2, $3, $4, $5, $6, $7, 20, 4, 10)",
            [theirs["id"], mine["id"]], [user, user], ["x", "y"], ["run_a1", "run_a2"],
            ["msg_a1", "msg_a2"], ["supervisor"] * 2, ["reject"] * 2), timeout=5)
    assert [(r["idx"], r["outcome"]) for r in rows] == [(1, "not_found"), (2, "created")]


async def test_a_creation_alone_naming_another_users_thread_never_waits_for_it(
        pool: asyncpg.Pool, redis: Redis, user: str) -> None:
    """A creation with no other to share its statement is answered ``not_found`` for
    a thread that is not its requester's without waiting for that thread's lock:
    an attacker naming a victim's thread never queues behind, or holds, the victim's
    writes on it."""
    runs = _transitions(pool, redis)
    theirs = await Store(pool).create_thread(f"{user}_victim", "t")
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM app.threads WHERE id = $1 FOR UPDATE", theirs["id"])
        problem = await asyncio.wait_for(
            _problem(runs, user, theirs["id"], "x", "supervisor"), timeout=5)
    assert (problem.status, problem.code) == (404, "not_found")
    assert runs._creations.batches == 1
