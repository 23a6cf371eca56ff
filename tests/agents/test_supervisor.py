"""The supervisor pipeline end to end on the real stack: usage records posted over
REST land in ClickHouse, and the answer's figures are those records' own sums."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from agents.pricing import cents
from e2e.checks import check_all
from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email
from e2e.usage import generate, totals
from tests.waiting import usage_visible

QUESTION = "What did I spend on each model over the last 7 days, and how can I cut it?"


def _expected_lines(records: list[dict[str, Any]], since: datetime) -> list[str]:
    return [f"- {model}: {count:,} requests, {cents(cost)}"
            for model, (count, cost) in totals(records, since=since).items()]


async def _seed(client: ChatClient, key: str) -> list[dict[str, Any]]:
    # six days inside the window and records 10 to 14 days old that must not count
    now = datetime.now(UTC)
    recent = generate(key, 6, end=now, per_day=25)
    old = generate(key + "/old", 4, end=now - timedelta(days=10), per_day=25)
    assert await client.post_usage(old + recent) == len(old) + len(recent)
    await usage_visible(client, len(old) + len(recent))
    return recent


async def test_spend_question_runs_the_pipeline_with_the_users_own_figures(
        target: Target) -> None:
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email("spend"), PASSWORD)
        recent = await _seed(client, "spend-test")
        by_model = await client.usage()  # the last 30 days by default: old ones too
        assert {i["key"] for i in by_model["items"]} >= {r["model"] for r in recent}
        socket = await client.connect(target.ws_url)
        try:
            thread = await client.create_thread()
            run = await client.start_run(thread["id"], QUESTION)
            final = await socket.wait_terminal(run["id"], timeout=30)
            events = socket.run_events(run["id"])
            assert check_all(socket.events, {run["id"]}, "the spend user") == []
        finally:
            await socket.close()
    assert final["type"] == "agent_completed", final
    answer = final["payload"]["result"]
    for line in _expected_lines(recent, datetime.now(UTC) - timedelta(days=7)):
        assert line in answer, f"{line!r} not in {answer!r}"
    total = sum((cost for _, cost in totals(recent).values()), Decimal(0))
    assert f"you spent {cents(total)} on {len(recent):,} requests" in answer
    assert re.search(r"Move the [\d,]+ requests on gpt-4o with", answer)
    agents = [e["agent"] for e in events if e["type"] in ("agent_thinking", "tool_executing")]
    assert agents[:1] == ["triage"] and "data" in agents and "optimization" in agents
    tools = [e["payload"]["tool"] for e in events if e["type"] == "tool_completed"]
    assert tools == ["query_usage", "estimate_savings"]
    assert all(e["payload"]["ok"] for e in events if e["type"] == "tool_completed")
    reporter = {e["agent"] for e in events if e["type"] == "partial_result"}
    assert reporter == {"report"}
    assert "".join(e["payload"]["delta"] for e in events
                   if e["type"] == "partial_result") == answer


async def test_usage_answers_per_day_and_refuses_bad_records(target: Target) -> None:
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email("usage"), PASSWORD)
        records = generate("per-day", 3, per_day=10)
        await client.post_usage(records)
        await usage_visible(client, len(records))
        days = (await client.usage("day"))["items"]
        assert sum(d["requests"] for d in days) == len(records)
        assert [d["key"] for d in days] == sorted(d["key"] for d in days)
        assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", d["key"]) for d in days)
        bad = [{**records[0], "cost_usd": -1}, {**records[0], "ts": "yesterday"},
               {**records[0], "ts": "2026-01-01T00:00:00"}]  # no time zone
        for record in bad:
            response = await client.http.post(
                f"{target.backend_url}/api/analytics/usage", json={"records": [record]},
                headers={"Authorization": f"Bearer {client.access_token}"})
            assert response.status_code == 422, record
        too_many = await client.http.post(
            f"{target.backend_url}/api/analytics/usage", json={"records": records[:1] * 10_001},
            headers={"Authorization": f"Bearer {client.access_token}"})
        assert too_many.status_code == 422
