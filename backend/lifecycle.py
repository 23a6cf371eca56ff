"""Applies runs' lifecycle events (from the emitter's lifecycle stream) to Postgres.

``agent_started`` marks the run running; a terminal event sets its final status,
stores the answer as an assistant message and sends a row to analytics (the
transitions themselves are :mod:`backend.runs`'). Entries are acknowledged after
the transactions commit and the runs they dispatched are appended to the queue; a
replica that dies leaves its entries pending and another replica claims them.
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

from backend.runs import Ending, RunTransitions
from bridge.errors import IngestBusy
from bridge.events import parse_timestamp
from bridge.groups import autoclaim, ensure_group, read_group, trim_consumed
from servicekit.redisclient import is_cluster
from servicekit.rediskeys import LIFECYCLE_GROUP, LIFECYCLE_STREAM, StreamShards

__all__ = ["LifecycleApplier"]

log = logging.getLogger(__name__)
#: seconds between two removals of the applied entries (the stream is never trimmed
#: by length: an entry not yet applied is never lost)
TRIM_EVERY_S = 5.0
OUTBOX_BATCH = 500
#: the most entries applied together (each batch pays its round trips once)
READ_BATCH = 1000


def _parse(fields: dict[bytes, bytes]) -> tuple[str, str, datetime, dict[str, Any]]:
    data = {k.decode(): v.decode() for k, v in fields.items()}
    return (data["type"], data["run_id"], parse_timestamp(data["ts"]),
            json.loads(data["payload"]))


class LifecycleApplier:
    def __init__(self, runs: RunTransitions, redis: Redis, *, consumer: str,
                 claim_idle_ms: int = 15_000) -> None:
        self._runs = runs
        self._redis = redis
        self._consumer = consumer
        self._claim_idle_ms = claim_idle_ms

    async def run(self) -> None:
        """Apply every shard's entries (one on one Redis), each shard in its own loop."""
        shards = StreamShards.of(LIFECYCLE_STREAM, cluster=is_cluster(self._redis))
        await asyncio.gather(*(self._run_shard(stream) for stream in shards.keys))

    async def _run_shard(self, stream: str) -> None:
        backoff = 0.1
        while True:
            try:
                await ensure_group(self._redis, stream, LIFECYCLE_GROUP)
                await self._consume(stream)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, IngestBusy, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as exc:
                log.warning("lifecycle applier paused: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _consume(self, stream: str) -> None:
        # our own pending entries first (after a restart), then new ones
        start = "0"
        loop = asyncio.get_running_loop()
        next_trim = loop.time() + TRIM_EVERY_S
        while True:
            entries = await read_group(self._redis, stream, LIFECYCLE_GROUP,
                                       self._consumer, start=start, count=READ_BATCH,
                                       block_ms=1000 if start == ">" else None)
            if start == "0" and not entries:
                start = ">"
                continue
            await self.apply_all(entries, stream)
            if start == ">" and not entries:
                await self._claim_abandoned(stream)
            if loop.time() >= next_trim:  # what every replica has applied goes
                next_trim = loop.time() + TRIM_EVERY_S
                await trim_consumed(self._redis, stream, LIFECYCLE_GROUP)

    async def _claim_abandoned(self, stream: str) -> None:
        await self.apply_all(await autoclaim(self._redis, stream, LIFECYCLE_GROUP,
                                             self._consumer, min_idle_ms=self._claim_idle_ms),
                             stream)

    async def apply_all(self, entries: list[tuple[bytes, dict[bytes, bytes]]],
                        stream: str = LIFECYCLE_STREAM) -> None:
        """Apply a batch of entries, then acknowledge them together. The runs that
        started are marked in one statement (with their users' top-ups), the
        endings (with their analytics rows in the outbox) in another; the runs both
        let go are appended in one round trip, while the analytics rows go to the
        ingest stream, before the acknowledgement. Applying an entry twice changes
        nothing in Postgres, so a batch cut short is safe to apply again."""
        if not entries:
            return
        events = [_parse(fields) for _, fields in entries]
        started = [(run_id, ts) for kind, run_id, ts, _ in events if kind == "agent_started"]
        go = await self._runs.start(started)
        for finished in await self._runs.finish_all(
                [Ending(run_id, kind, payload, ts)
                 for kind, run_id, ts, payload in events if kind != "agent_started"]):
            go.rows += finished.dispatch.rows
        # the runs let go are appended together while the ended runs' analytics rows
        # go to the ingest stream, before the acknowledgement (a row that cannot go
        # yet stays in the outbox, and the batch is applied again)
        for outcome in await asyncio.gather(go.send(), self._flush_outbox(),
                                            return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        await self._redis.xack(stream, LIFECYCLE_GROUP,
                               *[entry_id for entry_id, _ in entries])

    async def _flush_outbox(self) -> None:
        while await self._runs.flush_outbox(OUTBOX_BATCH) == OUTBOX_BATCH:
            pass
