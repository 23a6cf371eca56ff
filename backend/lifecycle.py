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
from bridge.ingest import append_rows
from bridge.keys import LIFECYCLE_STREAM
from servicekit.autopipeline import AutoPipeline

__all__ = ["LifecycleApplier", "final_status"]

log = logging.getLogger(__name__)
GROUP = "backend"


def final_status(event_type: str, payload: dict[str, Any]) -> str:
    if event_type == "agent_completed":
        return "succeeded"
    if event_type == "agent_cancelled":
        return "cancelled"
    return "timed_out" if payload.get("cause") == "timeout" else "failed"


#: The run's final status, and its answer as an assistant message, in one statement;
#: no row when the run was already final.
_FINISH = """
WITH done AS (
    UPDATE app.runs SET status = $2, result = $3, error = $4::jsonb, finished_at = $5,
                        started_at = coalesce(started_at, $5)
    WHERE id = $1 AND status IN ('queued', 'running') RETURNING *
), answer AS (
    INSERT INTO app.messages (id, thread_id, user_id, role, content, run_id)
    SELECT $6, thread_id, user_id, 'assistant', $3, id FROM done WHERE $3::text IS NOT NULL
)
SELECT * FROM done
"""


def _parse(fields: dict[bytes, bytes]) -> tuple[str, str, datetime, dict[str, Any]]:
    data = {k.decode(): v.decode() for k, v in fields.items()}
    return (data["type"], data["run_id"], parse_timestamp(data["ts"]),
            json.loads(data["payload"]))


class LifecycleApplier:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, *, consumer: str,
                 claim_idle_ms: int = 15_000) -> None:
        self._pool = pool
        self._redis = redis
        self._queue = AutoPipeline(redis)  # the dispatches of waiting runs
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
            await self.apply_all(entries)
            if start == ">" and not entries:
                await self._claim_abandoned()

    async def _claim_abandoned(self) -> None:
        await self.apply_all(await autoclaim(self._redis, LIFECYCLE_STREAM, GROUP,
                                             self._consumer, min_idle_ms=self._claim_idle_ms))

    async def apply_all(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Apply a batch of entries, then acknowledge them together. The runs that
        started are marked in one statement; each ending is its own transaction;
        the ended runs' analytics rows go out together, before the acknowledgement. Applying an
        entry twice changes nothing in Postgres, so a batch cut short is safe to
        apply again."""
        if not entries:
            return
        events = [_parse(fields) for _, fields in entries]
        started = [(run_id, ts) for kind, run_id, ts, _ in events if kind == "agent_started"]
        if started:
            await self._pool.execute(
                "UPDATE app.runs SET status = 'running', started_at = s.ts "
                "FROM unnest($1::text[], $2::timestamptz[]) AS s(id, ts) "
                "WHERE app.runs.id = s.id AND status = 'queued'",
                [run_id for run_id, _ in started], [ts for _, ts in started])
        rows = []
        for kind, run_id, ts, payload in events:
            if kind != "agent_started":
                row = await self._finish(run_id, kind, payload, ts)
                if row is not None:
                    rows.append(row)
        if rows:  # before the acknowledgement: a row is never acknowledged unsent
            await append_rows(self._redis, "runs", rows)
        await self._redis.xack(LIFECYCLE_STREAM, GROUP, *[entry_id for entry_id, _ in entries])

    async def _finish(self, run_id: str, event_type: str, payload: dict[str, Any],
                      ts: datetime) -> dict[str, Any] | None:
        """End the run's record; returns its analytics row (None: nothing changed)."""
        status = final_status(event_type, payload)
        result = payload.get("result") if event_type == "agent_completed" else None
        error = json.dumps(payload["error"]) if event_type == "agent_failed" else None
        async with self._pool.acquire() as conn, conn.transaction():
            # the thread's lock orders this with run creation (multitask policies)
            thread_id = await conn.fetchval(
                "SELECT t.id FROM app.runs r JOIN app.threads t ON t.id = r.thread_id "
                "WHERE r.id = $1 FOR UPDATE OF t", run_id)
            if thread_id is None:
                return None  # unknown run (its thread was deleted)
            row = await conn.fetchrow(_FINISH, run_id, status, result, error, ts, new_id("msg"))
            await dispatch_next(conn, self._queue, thread_id)
        if row is None:
            return None  # already final: applying twice changes nothing
        return {
            "run_id": run_id, "user_id": row["user_id"], "thread_id": row["thread_id"],
            "agent": row["agent"], "status": status,
            "created_at": row["created_at"].isoformat(),
            "started_at": row["started_at"].isoformat(),
            "finished_at": row["finished_at"].isoformat(),
            "duration_ms": payload.get("duration_ms") or int(
                (row["finished_at"] - row["started_at"]).total_seconds() * 1000),
            "tool_calls": payload.get("tool_calls", 0),
            "error_code": (payload.get("error") or {}).get("code", ""),
        }
