"""Creating runs: the thread's lock, the user message, the run row and the queue entry.

The thread row is locked for the transaction, so two ``start_run`` calls on one
thread are serialised by Postgres whichever replica they reach; with policy
``reject`` exactly one of them is accepted.

Per-user limits are counted in that transaction too, under a second lock: the
user's (a transaction-scoped advisory lock), so two creations of one user on
different threads are serialised as well and concurrent creations cannot overshoot.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import asyncpg
from redis.asyncio import Redis

from backend.store import ACTIVE, Store, new_id, run_json
from bridge.cancel import request_cancel
from bridge.queue import RUN_QUEUE, RunRequest
from bridge.registry import ThreadRunRegistry
from servicekit import ProblemError
from servicekit.autopipeline import AutoPipeline

__all__ = ["RunService", "dispatch", "dispatch_next"]

Multitask = Literal["reject", "enqueue", "interrupt"]

_AGENTS_TTL_S = 1.0

#: With the thread locked: the user message, the run and the thread's updated_at, in
#: one statement. With $8 (check idle), nothing is written and no row comes back
#: while the thread has an active run; $9: dispatched now, or waiting its turn.
_CREATE = """
WITH allowed AS (
    SELECT 1 WHERE NOT $8 OR NOT EXISTS (
        SELECT 1 FROM app.runs WHERE thread_id = $1 AND status = ANY($7::text[]))
), message AS (
    INSERT INTO app.messages (id, thread_id, user_id, role, content, run_id)
    SELECT $5, $1, $2, 'user', $3, $4 FROM allowed
), touched AS (
    UPDATE app.threads SET updated_at = now() WHERE id = $1 AND EXISTS (SELECT 1 FROM allowed)
)
INSERT INTO app.runs (id, thread_id, user_id, agent, status, input, dispatched_at)
SELECT $4, $1, $2, $6, 'queued', $3, CASE WHEN $9 THEN now() END FROM allowed
RETURNING *
"""


#: The user's active runs: through the user's threads and the partial index of
#: the threads' active runs (the literal IN lets the planner use it).
_USER_ACTIVE = """
SELECT count(*) FROM app.runs r JOIN app.threads t ON t.id = r.thread_id
WHERE t.user_id = $1 AND r.status IN ('queued', 'running')
"""
#: Runs waiting their turn on a thread (queued, not dispatched).
_THREAD_WAITING = """
SELECT count(*) FROM app.runs
WHERE thread_id = $1 AND status = 'queued' AND dispatched_at IS NULL
"""
#: Seconds a refused client is told to wait: runs last seconds to minutes.
RETRY_AFTER_S = 5


async def dispatch(queue: AutoPipeline, row: asyncpg.Record) -> None:
    """Hand a run to the workers (through ``queue``: concurrent dispatches share
    their round trips to Redis)."""
    request = RunRequest(run_id=row["id"], user_id=row["user_id"], thread_id=row["thread_id"],
                         agent=row["agent"], input=row["input"])
    fields = [part for pair in request.fields().items() for part in pair]
    await queue.execute("XADD", RUN_QUEUE, "*", *fields)


async def dispatch_next(conn: asyncpg.Connection, queue: AutoPipeline, thread_id: str
                        ) -> None:
    """Dispatch the thread's oldest waiting run once no dispatched run is active.

    Called with the thread row locked, in the transaction that ended a run.
    """
    row = await conn.fetchrow(
        "UPDATE app.runs SET dispatched_at = now() WHERE id = (SELECT id FROM app.runs "
        "WHERE thread_id = $1 AND status = 'queued' AND dispatched_at IS NULL "
        "ORDER BY created_at, id LIMIT 1) AND NOT EXISTS (SELECT 1 FROM app.runs "
        "WHERE thread_id = $1 AND status IN ('queued', 'running') "
        "AND dispatched_at IS NOT NULL) RETURNING *", thread_id)
    if row is not None:
        await dispatch(queue, row)


class RunService:
    def __init__(self, store: Store, redis: Redis, registry: ThreadRunRegistry, *,
                 default_agent: str = "supervisor", max_active_per_user: int = 20,
                 max_waiting_per_thread: int = 10) -> None:
        self._store = store
        self._max_active = max_active_per_user
        self._max_waiting = max_waiting_per_thread
        self._redis = redis
        self._queue = AutoPipeline(redis)  # the dispatches of concurrent requests
        self._registry = registry
        self._default_agent = default_agent
        self._agents: set[str] | None = None
        self._agents_read_at = float("-inf")

    async def known_agents(self) -> set[str] | None:
        """Agents announced by the workers; None while no worker has announced any.
        Read from Redis at most once a second (the catalog changes when workers start)."""
        now = time.monotonic()
        if now - self._agents_read_at > _AGENTS_TTL_S:
            names = await self._redis.hkeys("agents:catalog")
            self._agents = ({n.decode() if isinstance(n, bytes) else n for n in names}
                            if names else None)
            self._agents_read_at = now
        return self._agents

    async def create(self, user_id: str, thread_id: str, text: str, agent: str | None,
                     multitask: Multitask = "reject") -> dict[str, Any]:
        agent = agent or self._default_agent
        known = await self.known_agents()
        if known is not None and agent not in known:
            raise ProblemError(422, "unknown_agent", f"no agent named {agent!r}")
        async with self._store.pool.acquire() as conn, conn.transaction():
            owner = await conn.fetchval(
                "SELECT user_id FROM app.threads WHERE id = $1 FOR UPDATE", thread_id)
            if owner != user_id:
                raise ProblemError(404, "not_found", "no such thread")
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               user_id)
            if await conn.fetchval(_USER_ACTIVE, user_id) >= self._max_active:
                raise ProblemError(
                    429, "too_many_runs",
                    f"at most {self._max_active} active runs per user; wait for one to end",
                    {"Retry-After": str(RETRY_AFTER_S)})
            # a free thread (the usual case) takes one statement; a busy one a few more.
            # This statement's snapshot is taken after the lock, so it sees every run
            # created before (those creations held the lock until they committed).
            args = (thread_id, user_id, text, new_id("run"), new_id("msg"), agent, list(ACTIVE))
            row = await conn.fetchrow(_CREATE, *args, True, True)
            if row is None:
                live = await self._live_runs(conn, user_id, thread_id, multitask)
                if live and await conn.fetchval(_THREAD_WAITING, thread_id) >= self._max_waiting:
                    raise ProblemError(
                        429, "too_many_runs",
                        f"at most {self._max_waiting} runs wait on one thread",
                        {"Retry-After": str(RETRY_AFTER_S)})
                # with runs still live, the new one waits its turn (enqueue, interrupt):
                # the backend dispatches it when the thread's last run ends
                row = await conn.fetchrow(_CREATE, *args, False, not live)
            if row["dispatched_at"] is not None:
                await dispatch(self._queue, row)
        return run_json(row)

    async def _live_runs(self, conn: asyncpg.Connection, user_id: str, thread_id: str,
                         multitask: Multitask) -> list[str]:
        """The thread's live runs, once the policy allows a new run beside them."""
        active = await conn.fetch(
            "SELECT id FROM app.runs WHERE thread_id = $1 AND status = ANY($2::text[])",
            thread_id, list(ACTIVE))
        # a run whose terminal event is out is over, even if its record lags
        live = [run["id"] for run in active
                if not await self._registry.ended(user_id, run["id"])]
        if live and multitask == "reject":
            raise ProblemError(409, "thread_busy", f"run {live[0]} is active on this thread")
        if live and multitask == "interrupt":
            for active_id in live:
                await request_cancel(self._redis, active_id, by="interrupt")
        return live

    async def cancel(self, user_id: str, run_id: str) -> None:
        """Ask the worker running ``run_id`` to stop; it ends with ``agent_cancelled``."""
        status = await self._store.pool.fetchval(
            "SELECT status FROM app.runs WHERE id = $1 AND user_id = $2", run_id, user_id)
        if status is None:
            raise ProblemError(404, "not_found", "no such run")
        if status not in ACTIVE:
            raise ProblemError(409, "run_finished", f"the run already ended ({status})")
        await request_cancel(self._redis, run_id, by="user")
