"""The Ingester against a real redis-server and the embedded ClickHouse (chDB): a
poison entry goes to the dead-letter stream and the rows after it are stored; a
usage table from before the ``source`` column gets it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from backend.analytics import AnalyticsStore, Ingester, _parse_row
from bridge.ingest import append_rows
from servicekit.rediskeys import DEAD_STREAM, INGEST_STREAM
from servicekit.tasks import cancel_and_wait


def _row(user: str, n: int) -> dict[str, object]:
    return {"user_id": user, "ts": "2025-06-01T00:00:00Z", "model": "m", "prompt_tokens": n,
            "completion_tokens": 1, "cost_usd": 0.5, "latency_ms": 3, "status": "ok"}


async def test_a_poison_entry_does_not_block_the_rows_after_it(redis: Redis,
                                                                tmp_path: Path) -> None:
    store = AnalyticsStore(f"chdb://{tmp_path}/ch", "ingest_test")
    await store.setup()
    await append_rows(redis, "usage", [_row("usr_1", 1)])
    await redis.xadd(INGEST_STREAM, {"table": "usage", "rows": "{not json"})
    await redis.xadd(INGEST_STREAM, {"table": "nope", "rows": "[]"})
    # one row in a `row` field: no writer makes such an entry, nor does the ingester take it
    await redis.xadd(INGEST_STREAM, {"table": "usage", "row": json.dumps(_row("usr_1", 5))})
    # ClickHouse refuses it (a text where a number goes), while it answers
    await append_rows(redis, "usage", [{**_row("usr_1", 2), "prompt_tokens": "many"}])
    await append_rows(redis, "usage", [_row("usr_1", 3), _row("usr_1", 4)])
    ingester = Ingester(redis, store, consumer="c1", interval_s=0.05)
    task = asyncio.create_task(ingester.run())
    try:
        for _ in range(200):
            if ingester.inserted + ingester.dead >= 6:
                break
            await asyncio.sleep(0.05)
        rows = await store.query("SELECT prompt_tokens FROM {db}.usage ORDER BY prompt_tokens",
                                 {})
        assert [r["prompt_tokens"] for r in rows] == [1, 3, 4]
        dead: list[Any] = await redis.xrange(DEAD_STREAM)  # type: ignore[assignment]
        assert len(dead) == 4 and ingester.dead == 4
        assert {fields[b"table"] for _, fields in dead} == {b"usage", b"nope"}
        assert all(b"reason" in fields and b"id" in fields for _, fields in dead)
        assert await redis.xlen(INGEST_STREAM) == 0  # acknowledged, then trimmed
    finally:
        await cancel_and_wait(task)
        await store._call(store._connect().close)  # chDB: one engine a process, one path
        store.close()


async def test_a_database_from_before_the_source_column_gets_it_and_rows_carry_it(
        redis: Redis, tmp_path: Path) -> None:
    """A usage table made without ``source``: setup adds it (its rows read as the
    users'), and the ingester stores each row's source as it came."""
    store = AnalyticsStore(f"chdb://{tmp_path}/ch", "migrate_test")
    old = ("user_id String, ts DateTime64(3, 'UTC'), model LowCardinality(String), "
           "prompt_tokens UInt32, completion_tokens UInt32, cost_usd Decimal(18, 6), "
           "latency_ms UInt32, status LowCardinality(String)")
    try:
        await store.query("CREATE DATABASE IF NOT EXISTS {db}", {})
        await store.query(f"CREATE TABLE {{db}}.usage ({old}) ENGINE = MergeTree "
                          "ORDER BY (user_id, ts)", {})
        await store.insert("usage", [_parse_row(_row("usr_old", 1))])
        await store.setup()
        await store.setup()  # again: nothing to add
        await append_rows(redis, "usage", [{**_row("usr_old", 2), "source": "agents"},
                                           {**_row("usr_old", 3), "source": "user"},
                                           _row("usr_old", 4)])
        ingester = Ingester(redis, store, consumer="c1", interval_s=0.05)
        task = asyncio.create_task(ingester.run())
        try:
            for _ in range(200):
                if ingester.inserted >= 1:
                    break
                await asyncio.sleep(0.05)
        finally:
            await cancel_and_wait(task)
        rows = await store.query("SELECT prompt_tokens, source FROM {db}.usage "
                                 "ORDER BY prompt_tokens", {})
        assert [(r["prompt_tokens"], r["source"]) for r in rows] == [
            (1, "user"), (2, "agents"), (3, "user"), (4, "user")]
        (item,) = await store.usage("usr_old", datetime(2025, 5, 1, tzinfo=UTC),
                                    datetime(2025, 7, 1, tzinfo=UTC), "model")
        assert (item["requests"], item["agents_requests"], item["agents_cost_usd"]) == (
            4, 1, 0.5)
    finally:
        await store._call(store._connect().close)  # chDB: one engine a process, one path
        store.close()
