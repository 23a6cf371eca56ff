"""ClickHouse: the analytics tables, the ingester and the queries of the API.

The clickhouse-connect client is synchronous (and chDB, the embedded engine, is
in-process), so every call runs on one dedicated thread; the event loop never
blocks on ClickHouse. Usage queries are batched: the ``usage()`` requests that
wait while that thread is busy are answered together by one statement (the usage
table joined with a table of the requests, from array parameters), and each gets
its own rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver import options as clickhouse_options
from prometheus_client import Counter
from redis.asyncio import Redis

from bridge.events import parse_timestamp
from bridge.groups import ensure_group, read_group, trim_consumed
from bridge.ingest import AGENTS_SOURCE, USER_SOURCE
from servicekit.redisclient import is_cluster
from servicekit.rediskeys import DEAD_STREAM, INGEST_GROUP, INGEST_STREAM, StreamShards

__all__ = ["TABLES", "TIME_MAX", "TIME_MIN", "AnalyticsStore", "Ingester"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: a usage row's source: 'user' (the records users post) or 'agents' (the platform's
#: agents' own model calls, recorded by the worker for the run's user: agents.usage)
_SOURCE_COLUMN = f"LowCardinality(String) DEFAULT '{USER_SOURCE}'"
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
              f"latency_ms UInt32, status LowCardinality(String), source {_SOURCE_COLUMN}",
              "(user_id, ts)"),
    # one row per scenario of an end-to-end run (python -m e2e run), to trend them
    "e2e_runs": ("run_id String, started_at DateTime64(3, 'UTC'), stack LowCardinality(String), "
                 "scale LowCardinality(String), scenario LowCardinality(String), passed Bool, "
                 "metrics String, duration_ms UInt32",
                 "(scenario, started_at)"),
}
#: columns added to a table after its first release, (name, type, default): a
#: database made before gets them at setup, and a row written without one (by a
#: writer of before) takes its default
_ADDED_COLUMNS: dict[str, list[tuple[str, str, Any]]] = {
    "usage": [("source", _SOURCE_COLUMN, USER_SOURCE)],
}
_DATETIME_COLUMNS = {"created_at", "started_at", "finished_at", "ts"}
#: the range of ClickHouse's DateTime64 (every time column, and every bound of a
#: query, is one) that every ClickHouse holds: older servers clamp a value outside
#: it to its edge; newer ones (and the embedded chDB 4.4) reach 0000 to 9999,
#: but clickhouse-connect writes a bound's year under 1000 with fewer than four
#: digits, which fails the statement. The API takes no time outside it.
TIME_MIN = datetime(1900, 1, 1, tzinfo=UTC)
TIME_MAX = datetime(2299, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)
_DECIMAL_COLUMNS = {"cost_usd"}
#: the most usage() requests one statement answers
_USAGE_BATCH_MAX = 256


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


_Rows = list[dict[str, Any]]


def _time_text(value: datetime) -> str:
    """A window's bound as a DateTime64 parameter: naive UTC, as clickhouse-connect
    writes a datetime but with the year in four digits (its text of a year before
    1000 fails the statement, which would fail a whole batch). Texts of this fixed
    width sort as their times do."""
    utc = _naive_utc(value)
    return f"{utc.year:04d}-{utc:%m-%d %H:%M:%S.%f}"


@dataclass(eq=False, slots=True)
class _UsageRequest:
    """One pending usage() call: its arguments and the future its caller awaits."""

    user_id: str
    start: str  # the window, as _time_text writes it
    end: str
    by_day: bool
    short_tokens: int | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[_Rows]


def _answer(requests: list[_UsageRequest], outcome: list[_Rows] | Exception) -> None:
    """Settles the callers' futures (on their event loop): each its rows, or the error."""
    for i, request in enumerate(requests):
        if request.future.done():  # the caller was cancelled
            continue
        if isinstance(outcome, Exception):
            request.future.set_exception(outcome)
        else:
            request.future.set_result(outcome[i])


def _send(loop: asyncio.AbstractEventLoop, requests: list[_UsageRequest],
          outcome: list[_Rows] | Exception) -> None:
    """From any thread: settles the requests' futures on their event loop."""
    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_answer, requests, outcome)


def _usage_aggregates(short: str, day: str) -> str:
    """The usage() key and aggregates, for a request's ``short`` tokens and ``day``
    (1: per day, 0: per model). They are named s_*: a ClickHouse alias equal to a
    column name would replace that column inside the other aggregates. The agents_*
    ones are the part of the platform's agents (``source``)."""
    cond = f"u.completion_tokens < {short}"
    agents = f"u.source = '{AGENTS_SOURCE}'"
    return (f"if({day} = 1, toString(toDate(u.ts)), toString(u.model)) AS key, "
            "count() AS s_requests, sum(u.prompt_tokens) AS s_prompt_tokens, "
            "sum(u.completion_tokens) AS s_completion_tokens, sum(u.cost_usd) AS s_cost_usd, "
            "quantileExact(0.5)(u.latency_ms) AS s_p50_latency_ms, "
            f"countIf({agents}) AS s_agents_requests, "
            f"sumIf(u.cost_usd, {agents}) AS s_agents_cost_usd, "
            f"countIf({cond}) AS s_short_requests, "
            f"sumIf(u.prompt_tokens, {cond}) AS s_short_prompt_tokens, "
            f"sumIf(u.completion_tokens, {cond}) AS s_short_completion_tokens, "
            f"sumIf(u.cost_usd, {cond}) AS s_short_cost_usd")


# A request alone: the user's rows, read through the primary key (user_id, ts).
_USAGE_ONE_SQL = (
    "SELECT 0 AS idx, " + _usage_aggregates("{short:UInt32}", "{day:UInt8}") +
    " FROM {db}.usage AS u WHERE u.user_id = {user:String} "
    "AND u.ts >= {start:DateTime64(3)} AND u.ts < {end:DateTime64(3)} GROUP BY key")
# A batch: the usage table joined with a table of the requests, made of one array
# parameter per column (ARRAY JOIN zips them: seven parameters whatever the batch,
# where values() with a parameter per field spends close to 1 ms a request in chDB
# binding them). The join costs a few ms more than the query of one request: a
# batch of one runs that one.
_USAGE_BATCH_SQL = (
    "SELECT r.idx AS idx, " + _usage_aggregates("r.short", "r.day") +
    " FROM {db}.usage AS u INNER JOIN ("
    "SELECT idx, user, start, end, short, day FROM system.one ARRAY JOIN "
    "range(length({users:Array(String)})) AS idx, {users:Array(String)} AS user, "
    "{starts:Array(DateTime64(3))} AS start, {ends:Array(DateTime64(3))} AS end, "
    "{shorts:Array(UInt32)} AS short, {days:Array(UInt8)} AS day) AS r "
    "ON u.user_id = r.user "
    # the users and the overall window again, on the usage table alone: its primary
    # key then skips the rows no request asks for
    "WHERE u.user_id IN {users:Array(String)} "
    "AND u.ts >= {lo:DateTime64(3)} AND u.ts < {hi:DateTime64(3)} "
    "AND u.ts >= r.start AND u.ts < r.end "
    "GROUP BY idx, key")


class AnalyticsStore:
    def __init__(self, url: str, database: str) -> None:
        self._url = url
        self._db = database
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Any = None
        # usage() requests not yet taken by a batch, and whether a batch job is queued
        # on the thread (the lock: the event loop adds requests, the thread takes them)
        self._usage_lock = threading.Lock()
        self._usage_pending: deque[_UsageRequest] = deque()
        self._usage_queued = False
        self._closed = False
        #: statements run for usage() requests (each answers a batch of them)
        self.usage_batches = 0

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
        for table, added in _ADDED_COLUMNS.items():
            for name, kind, _ in added:
                client.command(f"ALTER TABLE {self._db}.{table} ADD COLUMN IF NOT EXISTS "
                               f"{name} {kind}")

    async def ping(self) -> None:
        await self._call(lambda: self._connect().command("SELECT 1"))

    async def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        await self._call(self._insert, table, rows)

    def _insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        columns = sorted({k for row in rows for k in row})
        # an added column that a row (from a writer of before) leaves out: its default
        defaults = {name: default for name, _, default in _ADDED_COLUMNS.get(table, ())}
        data = [[row.get(c, defaults.get(c)) for c in columns] for row in rows]
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
        than that: the candidates for a smaller model.

        The request joins the queue of pending ones; the next batch job on the
        ClickHouse thread answers all of them (at most ``_USAGE_BATCH_MAX``) at once.
        """
        # a value the statement could not take fails its caller here, not a whole batch
        user_id.encode()  # no lone surrogates
        if short_tokens is not None and not 0 <= short_tokens <= 0xFFFF_FFFF:
            raise ValueError(f"short_tokens out of range: {short_tokens}")
        loop = asyncio.get_running_loop()
        request = _UsageRequest(user_id, _time_text(start), _time_text(end),
                                group_by == "day", short_tokens, loop, loop.create_future())
        with self._usage_lock:
            if self._closed:
                raise RuntimeError("the analytics store is closed")
            if not self._usage_queued:
                # the job reads the queue under this lock: after this append
                self._executor.submit(self._usage_batch)
                self._usage_queued = True
            self._usage_pending.append(request)
        try:
            return await request.future
        except asyncio.CancelledError:
            with self._usage_lock:  # not yet taken by a batch: it leaves the queue
                if request in self._usage_pending:
                    self._usage_pending.remove(request)
            raise

    def _usage_batch(self) -> None:
        """On the ClickHouse thread: answers the requests that waited, in one statement."""
        with self._usage_lock:
            batch = [self._usage_pending.popleft()
                     for _ in range(min(len(self._usage_pending), _USAGE_BATCH_MAX))]
            # the rest, if any, in the next job: queued behind the calls waiting now
            self._usage_queued = bool(self._usage_pending)
            if self._usage_queued:
                self._executor.submit(self._usage_batch)
        if not batch:
            return
        outcome: list[_Rows] | Exception
        try:
            outcome = self._usage_query(batch)
        except Exception as exc:  # every request of the batch fails with it
            outcome = exc
        by_loop: dict[asyncio.AbstractEventLoop, list[int]] = defaultdict(list)
        for i, request in enumerate(batch):
            by_loop[request.loop].append(i)
        for loop, indices in by_loop.items():
            _send(loop, [batch[i] for i in indices],
                  outcome if isinstance(outcome, Exception) else [outcome[i] for i in indices])

    def _usage_query(self, batch: list[_UsageRequest]) -> list[_Rows]:
        # every value of a request is a bound parameter, never SQL text
        sql: str
        parameters: dict[str, Any]
        if len(batch) == 1:
            (one,) = batch
            sql, parameters = _USAGE_ONE_SQL, {
                "user": one.user_id, "start": one.start, "end": one.end,
                "short": one.short_tokens or 0, "day": int(one.by_day)}
        else:
            sql, parameters = _USAGE_BATCH_SQL, {
                "users": [r.user_id for r in batch],
                "starts": [r.start for r in batch], "ends": [r.end for r in batch],
                "shorts": [r.short_tokens or 0 for r in batch],
                "days": [int(r.by_day) for r in batch],
                "lo": min(r.start for r in batch), "hi": max(r.end for r in batch)}
        self.usage_batches += 1
        result = self._connect().query(sql.replace("{db}", self._db), parameters=parameters)
        names = [name.removeprefix("s_") for name in result.column_names]
        grouped: list[list[dict[str, Any]]] = [[] for _ in batch]
        for row in result.result_rows:
            record = dict(zip(names, row, strict=True))
            grouped[record.pop("idx")].append(record)
        return [_usage_rows(rows, request) for rows, request in zip(grouped, batch, strict=True)]

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
        with self._usage_lock:
            self._closed = True
            pending = list(self._usage_pending)
            self._usage_pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        for request in pending:  # their batch job was cancelled with the thread's queue
            _send(request.loop, [request], RuntimeError("the analytics store is closed"))


def _usage_rows(rows: list[dict[str, Any]], request: _UsageRequest) -> _Rows:
    """One request's rows of a batch, as its own query answered them: in order,
    ``short_*`` only if it asked, Decimal as float and counts as int."""
    if request.by_day:
        rows.sort(key=lambda row: row["key"])
    else:  # costliest first, exact on the Decimal sums
        rows.sort(key=lambda row: (-row["cost_usd"], row["key"]))
    answer = []
    for row in rows:
        item: dict[str, Any] = {}
        for name, value in row.items():
            if name.startswith("short_") and request.short_tokens is None:
                continue
            if isinstance(value, Decimal):
                item[name] = float(value)  # six decimals: exact in a double's text
            elif name != "key":
                item[name] = int(value)
            else:
                item[name] = value
        answer.append(item)
    return answer


class Ingester:
    """Moves rows from the ingest stream into ClickHouse, in batches, without loss.

    An entry that cannot be parsed, or that ClickHouse refuses while it answers,
    goes to the dead-letter stream (counted in ``dead_letters``, logged) and is
    acknowledged: the entries after it go on. While ClickHouse does not answer,
    nothing is acknowledged and rows wait in Redis.

    After a batch smaller than ``batch_size`` the next read waits half of
    ``interval_s``: the rows that arrive meanwhile go in one insert (each insert has
    a fixed cost in ClickHouse; under a steady trickle, one per entry took 14 % of
    a busy backend's CPU)."""

    def __init__(self, redis: Redis, store: AnalyticsStore, *, consumer: str,
                 batch_size: int = 1000, interval_s: float = 0.5,
                 dead_letters: Counter | None = None) -> None:
        self._redis = redis
        self._store = store
        self._consumer = consumer
        self._batch_size = batch_size
        self._interval_ms = int(interval_s * 1000)
        self._dead_letters = dead_letters
        self.inserted = 0
        self.dead = 0

    async def run(self) -> None:
        """Insert every shard's rows (one on one Redis), each shard in its own loop."""
        shards = StreamShards.of(INGEST_STREAM, cluster=is_cluster(self._redis))
        await asyncio.gather(*(self._run_shard(stream) for stream in shards.keys))

    async def _run_shard(self, stream: str) -> None:
        backoff = 0.2
        while True:
            try:
                await ensure_group(self._redis, stream, INGEST_GROUP)
                await self._drain(stream, "0")  # what this consumer read but did not insert
                while True:
                    if 0 < await self._drain(stream, ">") < self._batch_size:
                        await asyncio.sleep(self._interval_ms / 2000)
                    backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # ClickHouse or Redis down: rows wait in Redis
                log.warning("analytics ingest paused (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _drain(self, stream: str, start: str) -> int:
        """Insert what is pending (``start="0"``, all of it) or new (``">"``, one
        batch); returns the size of the last batch read."""
        while True:
            entries = await read_group(
                self._redis, stream, INGEST_GROUP, self._consumer, start=start,
                count=self._batch_size, block_ms=self._interval_ms if start == ">" else None)
            if not entries:
                return 0
            parsed: list[tuple[bytes, str, list[dict[str, Any]]]] = []
            for entry_id, fields in entries:
                try:
                    parsed.append((entry_id, *_parse_entry(fields)))
                except Exception as exc:
                    await self._bury(entry_id, fields, f"unparsable: {exc}")
            by_table: dict[str, list[tuple[bytes, list[dict[str, Any]]]]] = defaultdict(list)
            for entry_id, table, rows in parsed:
                by_table[table].append((entry_id, rows))
            for table, items in by_table.items():
                await self._insert(table, items, dict(entries))
            await self._redis.xack(stream, INGEST_GROUP, *[e for e, _ in entries])
            await trim_consumed(self._redis, stream, INGEST_GROUP)
            self.inserted += len(parsed)
            if start == ">":
                return len(entries)

    async def _insert(self, table: str, items: list[tuple[bytes, list[dict[str, Any]]]],
                      fields: dict[bytes, dict[bytes, bytes]]) -> None:
        try:
            await self._store.insert(table, [row for _, rows in items for row in rows])
            return
        except Exception:
            await self._store.ping()  # ClickHouse away: raises, nothing is acknowledged
        for entry_id, rows in items:  # it answers but refused the batch: one by one
            try:
                await self._store.insert(table, rows)
            except Exception as exc:
                await self._store.ping()
                await self._bury(entry_id, fields[entry_id], f"refused by clickhouse: {exc}")

    async def _bury(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> None:
        reason = reason[:500]
        dead: dict[Any, Any] = {**fields, b"id": entry_id, b"reason": reason}
        await self._redis.xadd(DEAD_STREAM, dead, maxlen=100_000, approximate=True)
        self.dead += 1
        if self._dead_letters is not None:
            self._dead_letters.inc()
        log.error("analytics entry %s moved to %s: %s", entry_id.decode(), DEAD_STREAM, reason)


def _parse_entry(fields: dict[bytes, bytes]) -> tuple[str, list[dict[str, Any]]]:
    """An entry's table and parsed rows; raises on anything malformed."""
    table = fields[b"table"].decode()
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}")
    rows = json.loads(fields[b"rows"])
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError("rows are not a list of objects")
    return table, [_parse_row(row) for row in rows]
