"""ClickHouse: the analytics tables, the ingester and the queries of the API.

The clickhouse-connect client is synchronous (and chDB, the embedded engine, is
in-process), so every call runs on one dedicated thread; the event loop never
blocks on ClickHouse.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver import options as clickhouse_options
from redis.asyncio import Redis

from bridge.groups import ensure_group, read_group
from bridge.ingest import INGEST_GROUP, INGEST_STREAM

__all__ = ["TABLES", "AnalyticsStore", "Ingester"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: table -> (column definitions, ORDER BY). Rows name their columns; missing ones default.
TABLES: dict[str, tuple[str, str]] = {
    "runs": ("run_id String, user_id String, thread_id String, agent LowCardinality(String), "
             "status LowCardinality(String), created_at DateTime64(3, 'UTC'), "
             "started_at DateTime64(3, 'UTC'), finished_at DateTime64(3, 'UTC'), "
             "duration_ms UInt32, tool_calls UInt16, error_code LowCardinality(String)",
             "(user_id, finished_at)"),
}
_DATETIME_COLUMNS = {"created_at", "started_at", "finished_at", "ts"}


def _parse_row(table: str, row: dict[str, Any]) -> dict[str, Any]:
    return {k: (datetime.fromisoformat(v.replace("Z", "+00:00"))
                if k in _DATETIME_COLUMNS and isinstance(v, str) else v) for k, v in row.items()}


class AnalyticsStore:
    def __init__(self, url: str, database: str) -> None:
        self._url = url
        self._db = database
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Any = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _connect(self) -> Any:
        if self._client is None:
            self._client = clickhouse_connect.get_client(dsn=self._url)
        return self._client

    async def setup(self) -> None:
        await self._call(self._setup)

    def _setup(self) -> None:
        client = self._connect()
        # clickhouse-connect imports pandas lazily on the first insert: do it now,
        # at start, rather than under the first burst of traffic
        getattr(clickhouse_options, "pd", None)
        client.command(f"CREATE DATABASE IF NOT EXISTS {self._db}")
        for table, (columns, order) in TABLES.items():
            client.command(f"CREATE TABLE IF NOT EXISTS {self._db}.{table} ({columns}) "
                           f"ENGINE = MergeTree ORDER BY {order}")

    async def ping(self) -> None:
        await self._call(lambda: self._connect().command("SELECT 1"))

    async def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        await self._call(self._insert, table, rows)

    def _insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        columns = sorted({k for row in rows for k in row})
        data = [[row.get(c) for c in columns] for row in rows]
        self._connect().insert(f"{self._db}.{table}", data, column_names=columns)

    async def query(self, sql: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            result = self._connect().query(sql.replace("{db}", self._db), parameters=parameters)
            return [dict(zip(result.column_names, row, strict=True))
                    for row in result.result_rows]
        return await self._call(run)

    async def runs(self, user_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        rows = await self.query(
            "SELECT run_id, thread_id, agent, status, created_at, finished_at, duration_ms, "
            "tool_calls, error_code FROM {db}.runs WHERE user_id = {user:String} "
            "AND finished_at >= {start:DateTime64(3)} AND finished_at < {end:DateTime64(3)} "
            "ORDER BY finished_at DESC LIMIT 1000",
            {"user": user_id, "start": start.astimezone(UTC).replace(tzinfo=None),
             "end": end.astimezone(UTC).replace(tzinfo=None)})
        for row in rows:
            for key in ("created_at", "finished_at"):
                row[key] = row[key].replace(tzinfo=UTC).isoformat()
        return rows

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Ingester:
    """Moves rows from the ingest stream into ClickHouse, in batches, without loss."""

    def __init__(self, redis: Redis, store: AnalyticsStore, *, consumer: str,
                 batch_size: int = 1000, interval_s: float = 0.5) -> None:
        self._redis = redis
        self._store = store
        self._consumer = consumer
        self._batch_size = batch_size
        self._interval_ms = int(interval_s * 1000)
        self.inserted = 0

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                await ensure_group(self._redis, INGEST_STREAM, INGEST_GROUP)
                await self._drain("0")  # what this consumer read but did not insert
                while True:
                    await self._drain(">")
                    backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # ClickHouse or Redis down: rows wait in Redis
                log.warning("analytics ingest paused (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _drain(self, start: str) -> None:
        while True:
            entries = await read_group(
                self._redis, INGEST_STREAM, INGEST_GROUP, self._consumer, start=start,
                count=self._batch_size, block_ms=self._interval_ms if start == ">" else None)
            if not entries:
                return
            by_table: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for _, fields in entries:
                table = fields[b"table"].decode()
                if table in TABLES:
                    by_table[table].append(_parse_row(table, json.loads(fields[b"row"])))
                else:
                    log.error("dropping a row for unknown table %r", table)
            for table, rows in by_table.items():
                await self._store.insert(table, rows)
            await self._redis.xack(INGEST_STREAM, INGEST_GROUP, *[e for e, _ in entries])
            self.inserted += len(entries)
            if start == ">":
                return


