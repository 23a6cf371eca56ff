"""Applies runs' lifecycle events (from the emitter's lifecycle stream) to Postgres.

``agent_started`` marks the run running; a terminal event sets its final status,
stores the answer as an assistant message and sends a row to analytics. Entries
are acknowledged after the transaction commits; a replica that dies leaves its
entries pending and another replica claims them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend.runs import dispatch_next
from backend.store import new_id
from bridge.events import parse_timestamp
from bridge.groups import autoclaim, ensure_group, read_group
from bridge.ingest import append_row
from bridge.keys import LIFECYCLE_STREAM

__all__ = ["LifecycleApplier", "final_status"]

log = logging.getLogger(__name__)
GROUP = "backend"


def final_status(event_type: str, payload: dict[str, Any]) -> str:
    if event_type == "agent_completed":
        return "succeeded"
    if event_type == "agent_cancelled":
        return "cancelled"
    return "timed_out" if payload.get("cause") == "timeout" else "failed"




class LifecycleApplier:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, *, consumer: str,
                 claim_idle_ms: int = 15_000) -> None:
        self._pool = pool
        self._redis = redis
        self._consumer = consumer
        self._claim_idle_ms = claim_idle_ms

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await ensure_group(self._redis, LIFECYCLE_STREAM, GROUP)
                await self._consume()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("lifecycle applier paused: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _consume(self) -> None:
        # our own pending entries first (after a restart), then new ones
        start = "0"
        while True:
            entries = await read_group(self._redis, LIFECYCLE_STREAM, GROUP, self._consumer,
                                       start=start, block_ms=1000 if start == ">" else None)
            if start == "0" and not entries:
                start = ">"
                continue
            for entry_id, fields in entries:
                await self.apply(fields)
                await self._redis.xack(LIFECYCLE_STREAM, GROUP, entry_id)
            if start == ">" and not entries:
                await self._claim_abandoned()

    async def _claim_abandoned(self) -> None:
        claimed = await autoclaim(self._redis, LIFECYCLE_STREAM, GROUP, self._consumer,
                                  min_idle_ms=self._claim_idle_ms)
        for entry_id, fields in claimed:
            await self.apply(fields)
            await self._redis.xack(LIFECYCLE_STREAM, GROUP, entry_id)

    async def apply(self, fields: dict[bytes, bytes]) -> None:
        data = {k.decode(): v.decode() for k, v in fields.items()}
        event_type, run_id, ts = data["type"], data["run_id"], parse_timestamp(data["ts"])
        payload = json.loads(data["payload"])
        if event_type == "agent_started":
            await self._pool.execute(
                "UPDATE app.runs SET status = 'running', started_at = $2 "
                "WHERE id = $1 AND status = 'queued'", run_id, ts)
            return
        await self._finish(run_id, event_type, payload, ts)

    async def _finish(self, run_id: str, event_type: str, payload: dict[str, Any],
                      ts: datetime) -> None:
        status = final_status(event_type, payload)
        result = payload.get("result") if event_type == "agent_completed" else None
        error = json.dumps(payload["error"]) if event_type == "agent_failed" else None
        async with self._pool.acquire() as conn, conn.transaction():
            thread_id = await conn.fetchval("SELECT thread_id FROM app.runs WHERE id = $1",
                                            run_id)
            if thread_id is None:
                return  # unknown run (its thread was deleted)
            # the thread's lock orders this with run creation (multitask policies)
            await conn.execute("SELECT 1 FROM app.threads WHERE id = $1 FOR UPDATE", thread_id)
            row = await conn.fetchrow(
                "UPDATE app.runs SET status = $2, result = $3, error = $4::jsonb, "
                "finished_at = $5, started_at = coalesce(started_at, $5) "
                "WHERE id = $1 AND status IN ('queued', 'running') RETURNING *",
                run_id, status, result, error, ts)
            if row is not None and result is not None:
                await conn.execute(
                    "INSERT INTO app.messages (id, thread_id, user_id, role, content, run_id) "
                    "VALUES ($1, $2, $3, 'assistant', $4, $5)",
                    new_id("msg"), row["thread_id"], row["user_id"], result, run_id)
            await dispatch_next(conn, self._redis, thread_id)
        if row is None:
            return  # already final: applying twice changes nothing
        await append_row(self._redis, "runs", {
            "run_id": run_id, "user_id": row["user_id"], "thread_id": row["thread_id"],
            "agent": row["agent"], "status": status,
            "created_at": row["created_at"].isoformat(),
            "started_at": row["started_at"].isoformat(),
            "finished_at": row["finished_at"].isoformat(),
            "duration_ms": payload.get("duration_ms") or int(
                (row["finished_at"] - row["started_at"]).total_seconds() * 1000),
            "tool_calls": payload.get("tool_calls", 0),
            "error_code": (payload.get("error") or {}).get("code", ""),
        })
