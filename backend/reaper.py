"""Declares runs lost when their worker's lease lapsed (``agent_failed``, ``worker_lost``),
and appends the queue entries of dispatches whose append never happened.

Every replica runs it; a short Redis lock lets one of them work per interval,
and the emit script's one-terminal-event rule makes a double declaration
impossible anyway.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend.runs import RunTransitions
from bridge.emitter import EventEmitter
from bridge.registry import RunRecord, ThreadRunRegistry

__all__ = ["Reaper"]

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, runs: RunTransitions, redis: Redis, registry: ThreadRunRegistry,
                 emitter: EventEmitter, *, interval_s: float = 2.0) -> None:
        self._runs = runs
        self._pool = runs.pool
        self._redis = redis
        self._registry = registry
        self._emitter = emitter
        self._interval_s = interval_s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.sweep()
            except (RedisError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("lost-run sweep skipped: %s", exc)

    async def sweep(self) -> list[str]:
        # one replica per interval; the same one tends to win, keeping its grace timers
        if not await self._redis.set("reaper:lock", "1", nx=True,
                                     px=int(self._interval_s * 900)):
            return []
        await self._runs.resend_unsent()
        rows = await self._pool.fetch(
            "SELECT id, thread_id, user_id, agent, status FROM app.runs "
            "WHERE status = 'running' ORDER BY started_at LIMIT 1000")
        running = [RunRecord(run_id=r["id"], thread_id=r["thread_id"], user_id=r["user_id"],
                             agent=r["agent"], status=r["status"]) for r in rows]
        return await self._registry.reap(running, self._emitter,
                                         now=asyncio.get_running_loop().time())
