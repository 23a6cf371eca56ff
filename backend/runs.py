"""Creating runs: the thread's lock, the user message, the run row and the queue entry.

The thread row is locked for the transaction, so two ``start_run`` calls on one
thread are serialised by Postgres whichever replica they reach; with policy
``reject`` exactly one of them is accepted.
"""

from __future__ import annotations

from typing import Any, Literal

from redis.asyncio import Redis

from backend.store import ACTIVE, Store, new_id, run_json
from bridge.cancel import request_cancel
from bridge.queue import RUN_QUEUE, RunRequest
from bridge.registry import ThreadRunRegistry
from servicekit import ProblemError

__all__ = ["RunService"]

Multitask = Literal["reject", "enqueue", "interrupt"]


class RunService:
    def __init__(self, store: Store, redis: Redis, registry: ThreadRunRegistry, *,
                 default_agent: str = "supervisor") -> None:
        self._store = store
        self._redis = redis
        self._registry = registry
        self._default_agent = default_agent

    async def known_agents(self) -> set[str] | None:
        """Agents announced by the workers; None while no worker has announced any."""
        names = await self._redis.hkeys("agents:catalog")
        return {n.decode() if isinstance(n, bytes) else n for n in names} if names else None

    async def create(self, user_id: str, thread_id: str, text: str, agent: str | None,
                     multitask: Multitask = "reject") -> dict[str, Any]:
        agent = agent or self._default_agent
        known = await self.known_agents()
        if known is not None and agent not in known:
            raise ProblemError(422, "unknown_agent", f"no agent named {agent!r}")
        if multitask != "reject":
            raise ProblemError(422, "unsupported_multitask",
                               f"multitask policy {multitask!r} is not available yet")
        async with self._store.pool.acquire() as conn, conn.transaction():
            owner = await conn.fetchval(
                "SELECT user_id FROM app.threads WHERE id = $1 FOR UPDATE", thread_id)
            if owner != user_id:
                raise ProblemError(404, "not_found", "no such thread")
            active = await conn.fetch(
                "SELECT id FROM app.runs WHERE thread_id = $1 AND status = ANY($2::text[])",
                thread_id, list(ACTIVE))
            for run in active:
                # a run whose terminal event is out is over, even if its record lags
                if not await self._registry.ended(user_id, run["id"]):
                    raise ProblemError(409, "thread_busy",
                                       f"run {run['id']} is active on this thread")
            run_id = new_id("run")
            await conn.execute(
                "INSERT INTO app.messages (id, thread_id, user_id, role, content, run_id) "
                "VALUES ($1, $2, $3, 'user', $4, $5)",
                new_id("msg"), thread_id, user_id, text, run_id)
            row = await conn.fetchrow(
                "INSERT INTO app.runs (id, thread_id, user_id, agent, status, input) "
                "VALUES ($1, $2, $3, $4, 'queued', $5) RETURNING *",
                run_id, thread_id, user_id, agent, text)
            await conn.execute("UPDATE app.threads SET updated_at = now() WHERE id = $1",
                               thread_id)
            request = RunRequest(run_id=run_id, user_id=user_id, thread_id=thread_id,
                                 agent=agent, input=text)
            await self._redis.xadd(RUN_QUEUE, request.fields())
        return run_json(row)

    async def cancel(self, user_id: str, run_id: str) -> None:
        """Ask the worker running ``run_id`` to stop; it ends with ``agent_cancelled``."""
        status = await self._store.pool.fetchval(
            "SELECT status FROM app.runs WHERE id = $1 AND user_id = $2", run_id, user_id)
        if status is None:
            raise ProblemError(404, "not_found", "no such run")
        if status not in ACTIVE:
            raise ProblemError(409, "run_finished", f"the run already ended ({status})")
        await request_cancel(self._redis, run_id, by="user")
