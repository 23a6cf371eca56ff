"""AnalyticsStore.usage against the embedded ClickHouse (chDB): concurrent requests
share one statement, and each gets what it would get alone. Then the backend's
answers: to a ClickHouse that does not answer (503), and to dates ClickHouse cannot
hold (422, over the running stack)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import FastAPI, Request

from backend.analytics import _USAGE_BATCH_MAX, AnalyticsStore, _parse_row
from backend.app import create_app
from backend.config import BackendSettings
from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email
from e2e.stack import free_port
from e2e.usage import generate
from tests.conftest import starts_servers

END = datetime(2025, 6, 1, tzinfo=UTC)
# a user id that would break SQL text if it were ever formatted into it
ODD_USER = "usr_'quote\\back\tslash\" ü 🙂 {u0:String}"
USERS = [f"usr_{i:02d}" for i in range(19)] + [ODD_USER]
WINDOWS = [  # (start, end): whole milliseconds, as ClickHouse keeps them
    (END - timedelta(hours=6), END), (END - timedelta(days=1), END),
    (END - timedelta(days=3), END), (END - timedelta(days=7, hours=1), END),
    (END - timedelta(days=30), END), (END - timedelta(days=5), END - timedelta(days=2)),
    (END - timedelta(days=4, minutes=7), END - timedelta(hours=13, seconds=1)),
    (END + timedelta(days=1), END + timedelta(days=2)),  # nothing in it
]
SHORTS = [None, 50, 200, 400, None, 1_000_000]

Call = tuple[str, datetime, datetime, str, int | None]


@dataclass
class Seeded:
    store: AnalyticsStore
    rows: dict[str, list[dict[str, Any]]]  # per user: the rows inserted


def _rows(user: str) -> list[dict[str, Any]]:
    """The user's records; one in five is a model call of the platform's agents."""
    rows = []
    for n, record in enumerate(generate(user, 7, end=END, per_day=30)):
        row = {**_parse_row(record), "user_id": user, "source": "user" if n % 5 else "agents"}
        row["ts"] = row["ts"].replace(microsecond=row["ts"].microsecond // 1000 * 1000)
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
@starts_servers
async def seeded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Seeded]:
    store = AnalyticsStore(f"chdb://{tmp_path_factory.mktemp('analytics')}/ch", "analytics")
    await store.setup()
    rows = {user: _rows(user) for user in USERS}
    await store.insert("usage", [row for user in USERS for row in rows[user]])
    try:
        yield Seeded(store, rows)
    finally:
        # chDB opens one engine per process, on one path: release it for the next user
        await store._call(store._connect().close)
        store.close()


def _calls(count: int, seed: int) -> list[Call]:
    rng = random.Random(seed)
    return [(rng.choice([*USERS, "usr_nobody"]), *rng.choice(WINDOWS),
             rng.choice(["model", "day"]), rng.choice(SHORTS)) for _ in range(count)]


def _expected(rows: list[dict[str, Any]], call: Call) -> list[dict[str, Any]]:
    """The answer to ``call``, computed from the rows inserted for that user."""
    _, start, end, group_by, short = call
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if start <= row["ts"] < end:
            key = row["model"] if group_by == "model" else row["ts"].date().isoformat()
            groups[key].append(row)
    items = []
    for key, members in groups.items():
        latencies = sorted(r["latency_ms"] for r in members)
        agents = [r for r in members if r["source"] == "agents"]
        item: dict[str, Any] = {
            "key": key, "requests": len(members),
            "prompt_tokens": sum(r["prompt_tokens"] for r in members),
            "completion_tokens": sum(r["completion_tokens"] for r in members),
            "cost_usd": sum((r["cost_usd"] for r in members), Decimal(0)),
            "p50_latency_ms": latencies[len(latencies) // 2],
            "agents_requests": len(agents),
            "agents_cost_usd": sum((r["cost_usd"] for r in agents), Decimal(0))}
        if short is not None:
            few = [r for r in members if r["completion_tokens"] < short]
            item |= {"short_requests": len(few),
                     "short_prompt_tokens": sum(r["prompt_tokens"] for r in few),
                     "short_completion_tokens": sum(r["completion_tokens"] for r in few),
                     "short_cost_usd": sum((r["cost_usd"] for r in few), Decimal(0))}
        items.append(item)
    if group_by == "model":
        items.sort(key=lambda item: (-item["cost_usd"], item["key"]))
    else:
        items.sort(key=lambda item: item["key"])
    return [{k: float(v) if isinstance(v, Decimal) else v for k, v in item.items()}
            for item in items]


def _busy(store: AnalyticsStore, seconds: float) -> asyncio.Future[None]:
    """Keeps the ClickHouse thread busy (as a long insert would): calls made
    meanwhile wait for it, together."""
    return asyncio.ensure_future(store._call(time.sleep, seconds))


def _exact(answer: list[dict[str, Any]]) -> list[list[tuple[str, type, Any]]]:
    """An answer with its fields' order and types, for comparisons that see them."""
    return [[(name, type(value), value) for name, value in row.items()] for row in answer]


async def test_concurrent_calls_answer_as_sequential_ones(seeded: Seeded) -> None:
    store = seeded.store
    calls = _calls(60, seed=1)
    assert {c[3] for c in calls} == {"model", "day"} and None in {c[4] for c in calls}
    sequential = [await store.usage(*call) for call in calls]
    batches = store.usage_batches
    concurrent = await asyncio.gather(*(store.usage(*call) for call in calls))
    # one at a time, each ran the statement of one request; together, the batch's
    assert [_exact(a) for a in concurrent] == [_exact(a) for a in sequential]
    for call, answer in zip(calls, sequential, strict=True):
        assert _exact(answer) == _exact(_expected(seeded.rows.get(call[0], []), call)), call
    assert sum(1 for answer in sequential if answer) > 40  # most windows hold rows
    # the agents' part is apart in most answers, and never all of them
    assert sum(1 for answer in sequential for item in answer
               if 0 < item["agents_requests"] < item["requests"]) > 40
    # alone, each call was a statement; together, the 60 took very few
    assert store.usage_batches - batches <= 3


async def test_each_answer_holds_its_own_users_figures(seeded: Seeded) -> None:
    calls = _calls(80, seed=2)
    answers = await asyncio.gather(*(seeded.store.usage(*call) for call in calls))
    for call, answer in zip(calls, answers, strict=True):
        assert _exact(answer) == _exact(_expected(seeded.rows.get(call[0], []), call)), call
    odd = [a for c, a in zip(calls, answers, strict=True) if c[0] == ODD_USER and a]
    assert odd  # the odd user id went through its parameter intact
    by_model = await seeded.store.usage(ODD_USER, END - timedelta(days=30), END, "model")
    assert sum(row["requests"] for row in by_model) == len(seeded.rows[ODD_USER])


async def test_batches_take_what_waited_up_to_the_cap(seeded: Seeded) -> None:
    store = seeded.store
    before = store.usage_batches
    await store.usage(USERS[0], *WINDOWS[2], "model")
    assert store.usage_batches == before + 1  # alone: a batch of one, at once

    calls = _calls(_USAGE_BATCH_MAX * 2 + 10, seed=3)
    busy = _busy(store, 0.3)
    before = store.usage_batches
    answers = await asyncio.gather(*(store.usage(*call) for call in calls))
    await busy
    assert store.usage_batches - before == 3  # 522 waiting calls: 256 + 256 + 10
    for call, answer in zip(calls, answers, strict=True):
        assert answer == _expected(seeded.rows.get(call[0], []), call), call
    assert not store._usage_pending  # nobody's request stays behind


async def test_a_cancelled_caller_does_not_disturb_the_others(seeded: Seeded) -> None:
    store = seeded.store
    calls = _calls(90, seed=4)
    busy = _busy(store, 0.3)
    tasks = [asyncio.create_task(store.usage(*call)) for call in calls]
    await asyncio.sleep(0)
    assert len(store._usage_pending) == 90
    # cancelled while queued: the request leaves the queue
    queued = set(range(0, len(tasks), 3))
    for i in queued:
        tasks[i].cancel()
    await asyncio.sleep(0)
    assert len(store._usage_pending) == 60
    # cancelled while its batch runs on the thread: the thread turns to the batch
    # when the busy call ends; its answers reach this loop after this wake-up
    await busy
    deadline = time.monotonic() + 5
    while store._usage_pending:  # the batch takes them: wait without yielding
        assert time.monotonic() < deadline
    running = set(range(1, len(tasks), 3))
    assert not any(tasks[i].done() for i in running)
    for i in running:
        tasks[i].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, (call, result) in enumerate(zip(calls, results, strict=True)):
        if i in queued or i in running:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == _expected(seeded.rows.get(call[0], []), call), call
    assert not store._usage_pending
    # and the store goes on answering
    assert await store.usage(*calls[0]) == _expected(seeded.rows.get(calls[0][0], []),
                                                     calls[0])


async def test_a_failed_statement_fails_every_waiter_of_its_batch(seeded: Seeded) -> None:
    store = seeded.store
    calls = _calls(40, seed=5)
    await store.query("DROP TABLE {db}.usage", {})
    try:
        busy = _busy(store, 0.2)
        before = store.usage_batches
        results = await asyncio.gather(*(store.usage(*call) for call in calls),
                                       return_exceptions=True)
        await busy
        statements = store.usage_batches - before
    finally:
        await store.setup()
        await store.insert("usage", [row for user in USERS for row in seeded.rows[user]])
    assert statements == 1
    assert all(isinstance(r, ClickHouseError) for r in results), results
    # the statement's error, the same one, reaches each of its waiters
    assert len({id(r) for r in results}) == 1 and "UNKNOWN_TABLE" in str(results[0])
    # the table is back: so are the answers
    assert await store.usage(*calls[0]) == _expected(seeded.rows.get(calls[0][0], []),
                                                     calls[0])


async def test_a_request_the_statement_could_not_take_fails_alone(seeded: Seeded) -> None:
    store = seeded.store
    calls = _calls(30, seed=6)
    busy = _busy(store, 0.2)
    before = store.usage_batches
    tasks = [asyncio.ensure_future(store.usage(*call)) for call in calls]
    # a window from year 1 (clickhouse-connect's own text of that year fails a statement)
    ancient = asyncio.ensure_future(
        store.usage(USERS[1], datetime(1, 1, 2, tzinfo=UTC), END, "model", 100))
    with pytest.raises(UnicodeEncodeError):  # a user id no statement can carry
        await store.usage("usr_\ud800", *WINDOWS[1], "day")
    with pytest.raises(ValueError, match="short_tokens"):
        await store.usage(USERS[2], *WINDOWS[1], "day", -1)
    answers = await asyncio.gather(*tasks)
    await busy
    assert store.usage_batches - before == 1
    for call, answer in zip(calls, answers, strict=True):
        assert answer == _expected(seeded.rows.get(call[0], []), call), call
    everything = (USERS[1], END - timedelta(days=30), END, "model", 100)
    assert await ancient == _expected(seeded.rows[USERS[1]], everything)


def _handler(app: FastAPI, exc: Exception) -> Any:
    """The handler ``app`` answers ``exc`` with, found as Starlette finds it."""
    for cls in type(exc).__mro__:
        if cls in app.exception_handlers:
            return app.exception_handlers[cls]
    raise AssertionError(f"no handler for {type(exc).__name__}")


async def test_the_backends_answer_to_an_unreachable_clickhouse_is_503() -> None:
    # a store whose ClickHouse does not answer: the error it raises is the real one
    store = AnalyticsStore(f"http://127.0.0.1:{free_port()}", "analytics")
    try:
        with pytest.raises(ClickHouseError) as raised:
            await store.ping()
    finally:
        store.close()
    apps = create_app(BackendSettings())
    for app in (apps.public, apps.internal):
        request = Request({"type": "http", "method": "GET", "path": "/api/analytics/runs",
                           "headers": [], "query_string": b""})
        response = await _handler(app, raised.value)(request, raised.value)
        assert response.status_code == 503
        assert response.media_type == "application/problem+json"
        body = json.loads(response.body)
        assert body["code"] == "analytics_unavailable"
        assert body["status"] == 503 and "retry later" in body["detail"]
        assert "127.0.0.1" not in response.body.decode()  # nothing of the error leaks


@pytest.fixture
async def signed_in(target: Target) -> AsyncIterator[httpx.AsyncClient]:
    async with ChatClient(target.auth_url, target.backend_url) as user:
        await user.signup(unique_email("dates"), PASSWORD)
        async with httpx.AsyncClient(
                base_url=target.backend_url, timeout=10,
                headers={"Authorization": f"Bearer {user.access_token}"}) as http:
            yield http


DATED_ROUTES = ["/api/analytics/runs", "/api/analytics/tools", "/api/analytics/usage"]
OUT_OF_RANGE = ["0141-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "1899-12-31T23:59:59Z",
                "2300-01-01T00:00:00Z", "2299-12-31T23:00:00-01:00", "9999-12-31T23:59:59Z",
                "9999-12-31T23:59:59-01:00", "10000-01-01T00:00:00Z", "0141-06-01"]


@pytest.mark.parametrize("route", DATED_ROUTES)
async def test_dates_analytics_cannot_hold_are_422_naming_the_field(
        signed_in: httpx.AsyncClient, route: str) -> None:
    for field in ("from", "to"):
        for value in OUT_OF_RANGE:
            response = await signed_in.get(route, params={field: value})
            assert response.status_code == 422, (field, value, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            body = response.json()
            assert body["code"] == "validation_error" and body["status"] == 422
            assert [error["loc"] for error in body["errors"]] == [["query", field]]


@pytest.mark.parametrize("route", DATED_ROUTES)
async def test_dates_at_the_edges_of_the_range_are_answered(
        signed_in: httpx.AsyncClient, route: str) -> None:
    for params in ({"from": "1900-01-01T00:00:00Z"}, {"to": "1900-01-02T00:00:00Z"},
                   {"from": "1900-01-01T00:00:00Z", "to": "2299-12-31T23:59:59.999Z"},
                   {"from": "2299-12-31T23:59:59Z"}, {"to": "1900-01-01T02:00:00+02:00"}):
        response = await signed_in.get(route, params=params)
        assert response.status_code == 200, (params, response.text)
        assert response.json()["items"] == []  # a new user: nothing recorded


async def test_usage_records_at_times_analytics_cannot_hold_are_422(
        signed_in: httpx.AsyncClient) -> None:
    record = {"model": "m", "prompt_tokens": 1, "completion_tokens": 1, "cost_usd": "0.1",
              "latency_ms": 1, "status": "ok"}
    for ts in ("0141-01-01T00:00:00Z", "2300-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        response = await signed_in.post("/api/analytics/usage", json={"records": [
            {**record, "ts": "2025-06-01T00:00:00Z"}, {**record, "ts": ts}]})
        assert response.status_code == 422, (ts, response.text)
        body = response.json()
        assert body["code"] == "validation_error"
        assert [error["loc"] for error in body["errors"]] == [["body", "records", 1, "ts"]]
    response = await signed_in.post("/api/analytics/usage", json={"records": [
        {**record, "ts": "1900-01-01T00:00:00Z"}, {**record, "ts": "2299-12-31T23:59:59Z"}]})
    assert response.status_code == 202 and response.json() == {"accepted": 2}


async def test_a_user_cannot_post_records_as_the_platforms_agents(
        signed_in: httpx.AsyncClient) -> None:
    """``source`` is the user's (the default, or "user"): "agents" is a 422 naming it,
    and the records accepted count as the user's, never the agents'."""
    record = {"ts": datetime.now(UTC).isoformat(), "model": "gpt-4o", "prompt_tokens": 10,
              "completion_tokens": 5, "cost_usd": "0.125", "latency_ms": 7, "status": "ok"}
    for source in ("agents", "Agents", "", None, 1):
        response = await signed_in.post("/api/analytics/usage", json={"records": [
            record, {**record, "source": source}]})
        assert response.status_code == 422, (source, response.text)
        assert [error["loc"] for error in response.json()["errors"]] == [
            ["body", "records", 1, "source"]]
    response = await signed_in.post("/api/analytics/usage", json={"records": [
        record, {**record, "source": "user"}]})
    assert response.status_code == 202 and response.json() == {"accepted": 2}
    for _ in range(200):
        items = (await signed_in.get("/api/analytics/usage")).json()["items"]
        if items:
            break
        await asyncio.sleep(0.1)
    assert items == [{"key": "gpt-4o", "requests": 2, "prompt_tokens": 20,
                      "completion_tokens": 10, "cost_usd": 0.25, "p50_latency_ms": 7,
                      "agents_requests": 0, "agents_cost_usd": 0.0}]
