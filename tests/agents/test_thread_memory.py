"""Follow-up questions on the real stack: each answer is exact, to the cent, against
the sums of the records the user posted; another thread's turns never leak in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from agents.pricing import cents
from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email
from e2e.stack import LocalStack
from tests.waiting import usage_visible

#: (days ago, model, cost): far from every window's edge (7, 14, 30 days)
RECORDS = [(2.5, "gpt-4o", "1.250000"), (3.5, "gpt-4o-mini", "0.031000"),
           (4.5, "gpt-4o", "2.105000"), (9.5, "gpt-4o", "3.333333"),
           (10.5, "gpt-4o-mini", "0.444444"), (20.5, "gpt-4o", "7.000001")]


def _records(now: datetime) -> list[dict[str, Any]]:
    return [{"ts": (now - timedelta(days=ago)).isoformat(), "model": model,
             "prompt_tokens": 100, "completion_tokens": 50, "cost_usd": cost,
             "latency_ms": 500, "status": "ok"} for ago, model, cost in RECORDS]


def _sum(start: float, end: float, model: str | None = None) -> tuple[int, Decimal]:
    """Requests and cost of the records between ``end`` and ``start`` days ago."""
    chosen = [Decimal(cost) for ago, m, cost in RECORDS
              if end <= ago < start and (model is None or m == model)]
    return len(chosen), sum(chosen, Decimal(0))


def _spent(start: float, end: float, model: str | None = None) -> str:
    requests, cost = _sum(start, end, model)
    return f"you spent {cents(cost)} on {requests:,} requests"


async def _ask(client: ChatClient, thread_id: str, text: str) -> str:
    run = await client.start_run(thread_id, text)
    final = await client.wait_run(run["id"], timeout=30)
    assert final["status"] == "succeeded", final
    return str(final["result"])


async def test_follow_ups_are_answered_exactly(target: Target) -> None:
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email("memory"), PASSWORD)
        assert await client.post_usage(_records(datetime.now(UTC))) == len(RECORDS)
        await usage_visible(client, len(RECORDS))
        thread = (await client.create_thread())["id"]

        first = await _ask(client, thread, "how much did I spend in the last 7 days?")
        assert first.startswith(f"Over the last 7 days {_spent(7, 0)} across 2 models")
        compared = await _ask(client, thread, "compare with the week before")
        assert compared.startswith(f"Over the last 7 days {_spent(7, 0)}; over the 7 days "
                                   f"ending 7 days ago, {cents(_sum(14, 7)[1])} on 2 requests.")
        change = _sum(7, 0)[1] - _sum(14, 7)[1]
        assert f"That is {cents(abs(change))} less" in compared
        before = await _ask(client, thread, "and the 7 days before that?")
        assert before.startswith(f"Over the 7 days ending 7 days ago {_spent(14, 7)}")
        only = await _ask(client, thread, "only gpt-4o")
        assert only.startswith(f"Over the 7 days ending 7 days ago {_spent(14, 7, 'gpt-4o')} "
                               "on gpt-4o")
        month = await _ask(client, thread, "what about last month?")
        assert month.startswith(f"Over the last 30 days {_spent(30, 0, 'gpt-4o')} on gpt-4o")
        everything = await _ask(client, thread, "and for all models?")
        assert everything.startswith(f"Over the last 30 days {_spent(30, 0)} across 2 models")

        # another thread of the same user starts with no memory: no spend question to follow
        elsewhere = (await client.create_thread())["id"]
        alone = await _ask(client, elsewhere, "and the 7 days before that?")
        assert alone.startswith("I am the built-in planner")


async def test_what_the_tools_returned_is_kept_with_the_run(target: Target,
                                                            stack: LocalStack) -> None:
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email("notes"), PASSWORD)
        thread = (await client.create_thread())["id"]
        run = await client.start_run(thread, "what is 6 * 7")
        assert (await client.wait_run(run["id"], timeout=30))["status"] == "succeeded"
        plain = await client.start_run(thread, "hello there")
        assert (await client.wait_run(plain["id"], timeout=30))["status"] == "succeeded"
    conn = await asyncpg.connect(stack.database_url)
    try:
        notes = dict(await conn.fetch("SELECT id, tools_note FROM app.runs WHERE id = ANY($1)",
                                      [run["id"], plain["id"]]))
    finally:
        await conn.close()
    assert notes == {run["id"]: 'calculator {"expression":"6 * 7"} -> '
                                '{"expression":"6 * 7","value":42}',
                     plain["id"]: None}
