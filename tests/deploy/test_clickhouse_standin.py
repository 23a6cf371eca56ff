"""The offline compose stack's ClickHouse stand-in (deploy/offline/clickhouse/server.py),
run as its own process and spoken to by the backend's own client (AnalyticsStore over
clickhouse-connect's HTTP interface): each answer equals the one the embedded engine
(chDB in this process, the ``chdb://`` path) gives to the same calls on the same rows."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from backend.analytics import TABLES, AnalyticsStore, _parse_row
from e2e.stack import free_port
from e2e.usage import generate
from tests.conftest import starts_servers

SERVER = Path(__file__).resolve().parents[2] / "deploy" / "offline" / "clickhouse" / "server.py"
USER, PASSWORD, DATABASE = "agentchat", "Offline-pw-7f3a", "agentchat"
END = datetime(2025, 6, 1, tzinfo=UTC)
# a user id that would break SQL text if it were ever formatted into it
ODD_USER = "usr_'quote\\back\tslash\" ü 🙂 {u0:String}"
USERS = ["usr_a", "usr_b", "usr_c", ODD_USER]
WINDOWS = [(END - timedelta(hours=6), END), (END - timedelta(days=2), END),
           (END - timedelta(days=6), END), (END - timedelta(days=4), END - timedelta(days=1)),
           (END + timedelta(days=1), END + timedelta(days=2))]  # the last: nothing in it


class Standin:
    """The server as a subprocess on a free port, its log in a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log = path.parent / f"{path.name}.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def dsn(self, password: str = PASSWORD) -> str:
        return f"http://{USER}:{password}@127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "CLICKHOUSE_USER": USER, "CLICKHOUSE_PASSWORD": PASSWORD,
               "CLICKHOUSE_DB": DATABASE}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(SERVER), "--host", "127.0.0.1", "--port", str(self.port),
                 "--path", str(self.path)], env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the stand-in exited: {self.log.read_text()[-2000:]}")
            try:
                if http(f"{self.url}/ping") == (200, {}, b"Ok.\n"):
                    return
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise AssertionError("the stand-in did not answer /ping within 60 s")

    def stop(self) -> int:
        """SIGTERM, as Docker stops a container: the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            self.kill()

    def kill(self) -> None:
        """What is left of the process, after a failure: gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    """A plain request: status, the X-ClickHouse-* headers, body (errors included)."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, found, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, found, body = error.code, error.headers, error.read()
    ours = {k: v for k, v in found.items() if k.lower().startswith("x-clickhouse-exception")}
    return status, ours, body


def _ms(value: datetime) -> str:
    return value.replace(microsecond=value.microsecond // 1000 * 1000).isoformat()


def _records(user: str) -> dict[str, list[dict[str, Any]]]:
    """One user's rows of each table as the ingest stream carries them (JSON)."""
    rng = random.Random(user)
    usage = [{**record, "user_id": user} for record in generate(user, 6, end=END, per_day=25)]
    runs, tools = [], []
    for i in range(40):
        finished = END - timedelta(seconds=rng.uniform(60, 6 * 86_400))
        started = finished - timedelta(milliseconds=rng.randint(200, 90_000))
        status = rng.choice(["completed", "completed", "failed", "cancelled"])
        run: dict[str, Any] = {
            "run_id": f"{user}/run_{i}", "user_id": user, "thread_id": f"thr_{i % 7}",
            "agent": rng.choice(["echo", "research", "coder"]), "status": status,
            "created_at": _ms(started - timedelta(milliseconds=40)),
            "started_at": _ms(started), "finished_at": _ms(finished),
            "duration_ms": int((finished - started).total_seconds() * 1000),
            "tool_calls": rng.randint(0, 4),
            "error_code": "tool_failed" if status == "failed" else ""}
        runs.append(run)
        for j in range(run["tool_calls"]):
            tools.append({"run_id": run["run_id"], "user_id": user, "agent": run["agent"],
                          "tool": rng.choice(["search", "clock", "calculator"]),
                          "ok": rng.random() > 0.2, "error_code": "",
                          "duration_ms": rng.randint(1, 3000),
                          "ts": _ms(started + timedelta(milliseconds=10 * (j + 1)))})
    return {"usage": usage, "runs": runs, "tool_calls": tools}


def _e2e_records() -> list[dict[str, Any]]:
    return [{"run_id": f"e2e_{i}", "started_at": _ms(END - timedelta(hours=i)),
             "stack": "compose", "scale": "small", "scenario": f"scenario_{i % 5}",
             "passed": i % 3 != 0, "metrics": json.dumps({"p50_ms": i * 1.5, "n": i}),
             "duration_ms": 1000 + i} for i in range(30)]


def _batches() -> list[tuple[str, list[dict[str, Any]]]]:
    """The inserts, as the Ingester makes them: parsed rows, in batches per table;
    a batch of runs without ``started_at`` and ``error_code`` (their defaults)."""
    batches: list[tuple[str, list[dict[str, Any]]]] = []
    for user in USERS:
        for table, records in _records(user).items():
            rows = [_parse_row(record) for record in records]
            if table == "runs" and user == "usr_b":
                rows = [{k: v for k, v in row.items() if k not in ("started_at", "error_code")}
                        for row in rows]
            half = len(rows) // 2
            batches += [(table, rows[:half]), (table, rows[half:])]
    batches.append(("e2e_runs", [_parse_row(record) for record in _e2e_records()]))
    return batches


@dataclass
class Stores:
    embedded: AnalyticsStore
    remote: AnalyticsStore
    rows: dict[str, int]  # rows inserted, per table


async def _close(store: AnalyticsStore) -> None:
    # chDB opens one engine per process, on one path: release it for the next user
    await store._call(store._connect().close)
    store.close()


@pytest.fixture(scope="module")
@starts_servers
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    standin = Standin(tmp_path_factory.mktemp("standin") / "clickhouse")
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture(scope="module")
@starts_servers
async def stores(server: Standin, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[Stores]:
    embedded = AnalyticsStore(f"chdb://{tmp_path_factory.mktemp('embedded')}/ch", "analytics")
    remote = AnalyticsStore(server.dsn(), "analytics")
    rows: dict[str, int] = {}
    try:
        for store in (embedded, remote):
            await store.setup()
            for table, batch in _batches():
                await store.insert(table, batch)
        for table, batch in _batches():
            rows[table] = rows.get(table, 0) + len(batch)
        yield Stores(embedded, remote, rows)
    finally:
        await _close(embedded)
        await _close(remote)


def _exact(answer: list[dict[str, Any]]) -> list[list[tuple[str, type, Any]]]:
    """An answer with its fields' order and types, for comparisons that see them."""
    return [[(name, type(value), value) for name, value in row.items()] for row in answer]


async def test_every_tables_rows_read_back_as_the_embedded_engine_reads_them(
        stores: Stores) -> None:
    for table in TABLES:
        sql = f"SELECT * FROM {{db}}.{table} ORDER BY ALL"
        remote = await stores.remote.query(sql, {})
        assert len(remote) == stores.rows[table] > 0, table
        assert _exact(remote) == _exact(await stores.embedded.query(sql, {})), table
    # the types that cross the wire in their own encodings arrived as themselves
    usage = (await stores.remote.query("SELECT * FROM {db}.usage LIMIT 1", {}))[0]
    assert isinstance(usage["cost_usd"], Decimal) and isinstance(usage["ts"], datetime)
    calls = await stores.remote.query("SELECT ok, count() AS n FROM {db}.tool_calls "
                                      "GROUP BY ok ORDER BY ok", {})
    assert [row["ok"] for row in calls] == [False, True]
    defaults = await stores.remote.query(
        "SELECT DISTINCT started_at, error_code FROM {db}.runs WHERE user_id = {u:String}",
        {"u": "usr_b"})
    assert defaults == [{"started_at": datetime(1970, 1, 1), "error_code": ""}]


async def test_usage_answers_equal_the_embedded_engines(stores: Stores) -> None:
    rng = random.Random(7)
    calls = [(rng.choice([*USERS, "usr_nobody"]), *rng.choice(WINDOWS),
              rng.choice(["model", "day"]), rng.choice([None, 50, 400]))
             for _ in range(200)]
    expected = [await stores.embedded.usage(*call) for call in calls]
    alone = [await stores.remote.usage(*call) for call in calls[:40]]
    assert [_exact(a) for a in alone] == [_exact(e) for e in expected[:40]]
    # together, while the store's thread is busy: one statement, whose array
    # parameters are long enough that the client sends them as a multipart form
    busy = asyncio.ensure_future(stores.remote._call(time.sleep, 0.3))
    before = stores.remote.usage_batches
    together = await asyncio.gather(*(stores.remote.usage(*call) for call in calls))
    await busy
    assert stores.remote.usage_batches - before == 1
    assert [_exact(a) for a in together] == [_exact(e) for e in expected]
    assert sum(1 for answer in expected if answer) > 100  # most windows hold rows
    assert any(call[0] == ODD_USER and answer for call, answer in zip(calls, together,
                                                                      strict=True))


async def test_runs_and_tools_answers_equal_the_embedded_engines(stores: Stores) -> None:
    answered = 0
    for user in [*USERS, "usr_nobody"]:
        for start, end in WINDOWS:
            runs = await stores.remote.runs(user, start, end)
            assert runs == await stores.embedded.runs(user, start, end), (user, start)
            tools = await stores.remote.tools(user, start, end)
            assert _exact(tools) == _exact(await stores.embedded.tools(user, start, end))
            answered += bool(runs) + bool(tools)
    assert answered > 20


async def test_ping_and_commands(stores: Stores, server: Standin) -> None:
    await stores.remote.ping()
    client = clickhouse_connect.get_client(dsn=server.dsn())
    try:
        assert client.ping()
        assert client.command("SELECT 1") == 1
        assert client.command("SELECT 'a', 2") == ["a", "2"]
        assert client.command("SELECT 1 WHERE 0") == ""  # a result set, empty
        # CLICKHOUSE_DB was created at start
        assert client.command("EXISTS DATABASE {d:Identifier}", parameters={"d": DATABASE}) == 1
    finally:
        client.close()
    assert http(f"{server.url}/ping") == (200, {}, b"Ok.\n")
    assert http(f"{server.url}/") == (200, {}, b"Ok.\n")


def test_only_the_configured_user_gets_in(server: Standin) -> None:
    with pytest.raises(DatabaseError) as refused:
        clickhouse_connect.get_client(dsn=server.dsn("wrong"))
    assert refused.value.code == 516 and "AUTHENTICATION_FAILED" in str(refused.value)

    query = f"{server.url}/?query=SELECT%201"
    status, headers, body = http(query)  # no credentials
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (401, "516")
    assert body.startswith(b"Code: 516. DB::Exception: ")
    assert http(query, headers={"X-ClickHouse-User": USER, "X-ClickHouse-Key": "x"})[0] == 403
    assert http(query, headers={"X-ClickHouse-User": USER,
                                "X-ClickHouse-Key": PASSWORD}) == (200, {}, b"1\n")
    assert http(query, headers={"Authorization": "Bearer token"})[0] == 403
    assert http(f"{query}&user={USER}&password={PASSWORD}") == (200, {}, b"1\n")


async def test_a_failed_statement_raises_the_clients_database_error(stores: Stores) -> None:
    for sql, code, name in [("SELEC 1", 62, "SYNTAX_ERROR"),
                            ("SELECT * FROM {db}.nothing_here", 60, "UNKNOWN_TABLE")]:
        with pytest.raises(DatabaseError) as remote:
            await stores.remote.query(sql, {})
        with pytest.raises(DatabaseError) as embedded:
            await stores.embedded.query(sql, {})
        assert remote.value.code == embedded.value.code == code
        assert remote.value.name == name and name in str(remote.value)
    # a bad insert fails too, and the store goes on answering
    with pytest.raises(DatabaseError):
        await stores.remote.insert("usage", [{"user_id": "x", "no_such_column": 1}])
    assert len(await stores.remote.query("SELECT * FROM {db}.e2e_runs", {})) == 30


@pytest.mark.parametrize("compress", ["lz4", "zstd", "gzip", False])
def test_inserts_in_each_compression_the_client_sends(server: Standin,
                                                      compress: str | bool) -> None:
    client = clickhouse_connect.get_client(dsn=server.dsn(), compress=compress)
    table = f"{DATABASE}.scratch_{compress or 'plain'}"
    rows = [[i, f"name_{i % 3}", Decimal(i) / 1000, datetime(2025, 1, 1) + timedelta(
        milliseconds=i), i % 2 == 0] for i in range(5000)]
    try:
        client.command(f"CREATE TABLE {table} (i UInt32, name LowCardinality(String), "
                       "amount Decimal(18, 6), ts DateTime64(3, 'UTC'), ok Bool) "
                       "ENGINE = MergeTree ORDER BY i")
        summary = client.insert(table, rows, column_names=["i", "name", "amount", "ts", "ok"])
        assert summary.written_rows == len(rows)
        back = client.query(f"SELECT * FROM {table} ORDER BY i").result_rows
        assert [list(row) for row in back] == rows
    finally:
        client.close()


@pytest.mark.servers  # starts the stand-in itself
async def test_data_survives_a_restart_and_sigterm_exits_0(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    standin = Standin(tmp_path_factory.mktemp("restart") / "clickhouse")
    window = (END - timedelta(days=6), END)
    try:
        standin.start()
        store = AnalyticsStore(standin.dsn(), "analytics")
        try:
            await store.setup()
            await store.insert("usage", [_parse_row(r) for r in _records("usr_a")["usage"]])
            before = await store.usage("usr_a", *window, "model", 100)
        finally:
            await _close(store)
        assert before and standin.stop() == 0

        standin.start()  # on the same path
        store = AnalyticsStore(standin.dsn(), "analytics")
        try:
            assert await store.usage("usr_a", *window, "model", 100) == before
        finally:
            await _close(store)
        assert standin.stop() == 0
    finally:
        standin.kill()
    log = standin.log.read_text()
    assert "POST / 200" in log and "stopping" in log
    assert PASSWORD not in log and "query=" not in log


def test_the_other_shapes_of_a_request(server: Standin) -> None:
    client = clickhouse_connect.get_client(dsn=server.dsn())
    table = f"{DATABASE}.shapes"
    auth = {"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD}
    try:
        client.command(f"CREATE TABLE {table} (i UInt32, s String) ENGINE = MergeTree ORDER BY i")
        # the statement and its data in the body
        client.raw_insert(table, ["i", "s"], insert_block="1,one\n2,two\n", fmt="CSV")
        # the statement in the URL, the body compressed data
        client.raw_insert(table, ["i", "s"], insert_block=gzip.compress(b"3,three\n"),
                          fmt="CSV", compression="gzip")
        # the statement begun in the URL and ended in the body; Values after a blank
        for start, rest in [(f"INSERT INTO {table} FORMAT Values", b" (4,'four')"),
                            (f"INSERT INTO {table} VALUES", b"(5,'five')")]:
            assert http(f"{server.url}/?query={quote(start)}", rest, auth)[0] == 200
        assert client.query(f"SELECT * FROM {table} ORDER BY i").result_rows == [
            (1, "one"), (2, "two"), (3, "three"), (4, "four"), (5, "five")]
        # the format the SQL names, else the one asked for, else TabSeparated
        assert client.raw_query(f"SELECT max(i) AS m FROM {table}", fmt="JSONEachRow") \
            == b'{"m":5}\n'
        ask = f"{server.url}/?default_format=CSV&query={quote('SELECT 1, 2')}"
        assert http(ask, headers=auth) == (200, {}, b"1,2\n")
        assert http(f"{ask}%20FORMAT%20TSV", headers=auth) == (200, {}, b"1\t2\n")
        # a statement's own SET lasts for its request, as without a session
        default = client.command("SELECT getSetting('max_threads')")
        client.command("SET max_threads = 3")
        assert client.command("SELECT getSetting('max_threads')") == default != 3
        # data the engine cannot read: its error, through the client
        with pytest.raises(DatabaseError) as garbage:
            client.raw_insert(table, ["i", "s"], insert_block=b"\x02\x01garbage", fmt="Native")
        assert garbage.value.code is not None and garbage.value.name
    finally:
        client.close()
