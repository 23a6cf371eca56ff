"""Declares runs lost when their worker's lease lapsed (``agent_failed``, ``worker_lost``),
cancels runs whose tool approval went unanswered past its deadline, and appends
the queue entries of dispatches whose append never happened.

Every replica runs it; a Redis lock lets one of them work, the same one while it
lives (its grace timers are its own: a lock passing between replicas would start
them again), and the emit script's one-terminal-event rule makes a double
declaration impossible anyway.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend.approvals import RunApprovals
from backend.runs import RunTransitions
from bridge.emitter import EventEmitter
from bridge.errors import IngestBusy, RunFinished
from bridge.events import failed
from bridge.leases import RunLeases
from servicekit.rediskeys import REAPER_LOCK

__all__ = ["Reaper"]

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, runs: RunTransitions, redis: Redis, emitter: EventEmitter, *,
                 approvals: RunApprovals | None = None, interval_s: float = 2.0,
                 grace_s: float = 4.0) -> None:
        self._runs = runs
        self._approvals = approvals
        self._pool = runs.pool
        self._redis = redis
        self._leases = RunLeases(redis)
        self._emitter = emitter
        self._interval_s = interval_s
        self._grace_s = grace_s
        self._unleased_since: dict[str, float] = {}  # run id -> first seen without lease
        self._token = secrets.token_hex(8)  # this replica's hold on the lock

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.sweep()
            except (RedisError, OSError, IngestBusy, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as exc:
                log.warning("lost-run sweep skipped: %s", exc)

    async def sweep(self) -> list[str]:
        if not await self._hold_lock():
            return []
        await self._runs.resend_unsent()
        await self._runs.flush_outbox()
        return await self.reap(await self._running(), now=asyncio.get_running_loop().time())

    async def _hold_lock(self) -> bool:
        """Take the lock, or keep it when it is this replica's; it lapses after two
        and a half intervals without a sweep (its holder stopped)."""
        ttl_ms = int(self._interval_s * 2500)
        if await self._redis.set(REAPER_LOCK, self._token, nx=True, px=ttl_ms):
            return True
        if await self._redis.get(REAPER_LOCK) not in (self._token, self._token.encode()):
            return False
        await self._redis.pexpire(REAPER_LOCK, ttl_ms)
        return True

    async def _running(self, page: int = 1000) -> list[asyncpg.Record]:
        """Every running run, a page at a time: runs that wait long (for a tool
        approval) never hide the others from the sweep."""
        rows: list[asyncpg.Record] = []
        while True:
            last = rows[-1] if rows else None
            batch = await self._pool.fetch(
                "SELECT id, thread_id, user_id, agent, started_at FROM app.runs "
                "WHERE status = 'running' AND ($1::timestamptz IS NULL "
                "OR (started_at, id) > ($1, $2)) ORDER BY started_at, id LIMIT $3",
                last["started_at"] if last else None, last["id"] if last else "", page)
            rows += batch
            if len(batch) < page:
                return rows

    async def reap(self, running: list[asyncpg.Record], *, now: float) -> list[str]:
        """End every running run whose worker is gone; returns their ids.

        A run counts as lost once it has been seen without a lease for ``grace_s``
        (so a Redis that came back empty, losing the leases, gives the workers a
        heartbeat to take them again). The emit script stores one terminal event
        per run, so a run is declared lost once, and never after it ended.
        """
        unleased = await self._leases.unleased([run["id"] for run in running])
        if self._approvals is not None and unleased:  # a run waiting for its user's
            # approval has no worker and is not lost (past its deadline, it is cancelled)
            unleased -= await self._approvals.sweep(
                [run for run in running if run["id"] in unleased])
        self._unleased_since = {run_id: since for run_id, since in self._unleased_since.items()
                                if run_id in unleased}
        lost = []
        for run in running:
            if run["id"] not in unleased or \
                    now - self._unleased_since.setdefault(run["id"], now) < self._grace_s:
                continue
            try:
                await self._emitter.emit(
                    user_id=run["user_id"], run_id=run["id"], thread_id=run["thread_id"],
                    agent=run["agent"], type="agent_failed",
                    payload=failed("worker_lost", "the worker executing the run stopped",
                                   "worker_lost"))
            except RunFinished:
                # it ended, and its record missed it: the lifecycle entry was lost (on
                # a Redis Cluster it is appended after the event, on another slot)
                if (await self._runs.settle(run["user_id"], run["id"]))[0]:
                    log.warning("run %s had ended unrecorded; its end applied", run["id"])
                continue
            log.warning("run %s lost its worker; ended as worker_lost", run["id"])
            lost.append(run["id"])
        return lost
