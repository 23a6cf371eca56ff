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
from decimal import Decimal
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver import options as clickhouse_options
from redis.asyncio import Redis

from bridge.events import parse_timestamp
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
    "tool_calls": ("run_id String, user_id String, agent LowCardinality(String), "
                   "tool LowCardinality(String), ok Bool, error_code LowCardinality(String), "
                   "duration_ms UInt32, ts DateTime64(3, 'UTC')",
                   "(user_id, ts)"),
    "usage": ("user_id String, ts DateTime64(3, 'UTC'), model LowCardinality(String), "
              "prompt_tokens UInt32, completion_tokens UInt32, cost_usd Decimal(18, 6), "
              "latency_ms UInt32, status LowCardinality(String)",
              "(user_id, ts)"),
    # one row per scenario of an end-to-end run (python -m e2e run), to trend them
    "e2e_runs": ("run_id String, started_at DateTime64(3, 'UTC'), stack LowCardinality(String), "
                 "scale LowCardinality(String), scenario LowCardinality(String), passed Bool, "
                 "metrics String, duration_ms UInt32",
                 "(scenario, started_at)"),
}
_DATETIME_COLUMNS = {"created_at", "started_at", "finished_at", "ts"}
_DECIMAL_COLUMNS = {"cost_usd"}


def _parse_value(key: str, value: Any) -> Any:
    if key in _DATETIME_COLUMNS and isinstance(value, str):
        return parse_timestamp(value)
    if key in _DECIMAL_COLUMNS and value is not None:
        return Decimal(str(value))
    return value


def _parse_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _parse_value(k, v) for k, v in row.items()}


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


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
            {"user": user_id, "start": _naive_utc(start), "end": _naive_utc(end)})
        for row in rows:
            for key in ("created_at", "finished_at"):
                row[key] = row[key].replace(tzinfo=UTC).isoformat()
        return rows

    async def usage(self, user_id: str, start: datetime, end: datetime, group_by: str,
                    short_tokens: int | None = None) -> list[dict[str, Any]]:
        """The user's usage aggregates per model (costliest first) or per day (in
        order). ``short_tokens`` adds the requests whose completion was shorter
        than that: the candidates for a smaller model."""
        key = "model" if group_by == "model" else "toString(toDate(ts))"
        # aggregates are named s_* in SQL: a ClickHouse alias equal to a column name
        # would replace that column inside the other aggregates
        short = ""
        if short_tokens is not None:
            cond = "completion_tokens < {short:UInt32}"
            short = (f", countIf({cond}) AS s_short_requests"
                     f", sumIf(prompt_tokens, {cond}) AS s_short_prompt_tokens"
                     f", sumIf(completion_tokens, {cond}) AS s_short_completion_tokens"
                     f", sumIf(cost_usd, {cond}) AS s_short_cost_usd")
        order = "s_cost_usd DESC, key" if group_by == "model" else "key"
        rows = await self.query(
            f"SELECT {key} AS key, count() AS s_requests, sum(prompt_tokens) AS s_prompt_tokens, "
            "sum(completion_tokens) AS s_completion_tokens, sum(cost_usd) AS s_cost_usd, "
            f"quantileExact(0.5)(latency_ms) AS s_p50_latency_ms{short} "
            "FROM {db}.usage WHERE user_id = {user:String} "
            "AND ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)} "
            f"GROUP BY key ORDER BY {order}",
            {"user": user_id, "start": _naive_utc(start), "end": _naive_utc(end),
             "short": short_tokens or 0})
        rows = [{name.removeprefix("s_"): value for name, value in row.items()}
                for row in rows]
        for row in rows:
            for name, value in row.items():
                if isinstance(value, Decimal):
                    row[name] = float(value)  # six decimals: exact in a double's text
                elif name != "key":
                    row[name] = int(value)
        return rows

    async def tools(self, user_id: str, start: datetime, end: datetime
                    ) -> list[dict[str, Any]]:
        """Per tool: calls, failures and duration percentiles of the user's runs."""
        rows = await self.query(
            "SELECT tool, count() AS calls, countIf(NOT ok) AS failures, "
            "quantileExact(0.5)(duration_ms) AS p50_duration_ms, "
            "quantileExact(0.95)(duration_ms) AS p95_duration_ms "
            "FROM {db}.tool_calls WHERE user_id = {user:String} "
            "AND ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)} "
            "GROUP BY tool ORDER BY calls DESC, tool",
            {"user": user_id, "start": _naive_utc(start), "end": _naive_utc(end)})
        return [{k: (v if k == "tool" else int(v)) for k, v in row.items()} for row in rows]

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
                rows = (json.loads(fields[b"rows"]) if b"rows" in fields
                        else [json.loads(fields[b"row"])])
                if table in TABLES:
                    by_table[table].extend(_parse_row(row) for row in rows)
                else:
                    log.error("dropping %d rows for unknown table %r", len(rows), table)
            for table, rows in by_table.items():
                await self._store.insert(table, rows)
            await self._redis.xack(INGEST_STREAM, INGEST_GROUP, *[e for e, _ in entries])
            self.inserted += len(entries)
            if start == ">":
                return


