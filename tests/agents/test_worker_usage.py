"""The agents' own model calls through a real worker and a real redis-server: when a
run ends, its calls are on the ingest stream as usage rows of the run's user, marked
source 'agents', priced from the price table or the worker's own price (the model
provider: httpx.MockTransport, as in test_openai)."""

from __future__ import annotations

import asyncio
import json
import logging
from decimal import Decimal
from typing import Any, cast

import httpx
import pytest
from redis.asyncio import Redis

from agents.config import WorkerSettings
from agents.openai import OpenAIPlanner
from agents.runtime import Agent
from agents.tools import CALCULATOR, ToolRegistry
from agents.worker import QueueEntry, Worker
from bridge.queue import RunRequest
from bridge.streams import UserStreams
from servicekit.rediskeys import INGEST_STREAM, RUN_QUEUE
from tests.agents.test_openai import (
    Server,
    SSEStream,
    content_events,
    tool_call_events,
    with_usage,
)

USER = "usr_usage"
#: (prompt, completion) tokens of the run's two calls: the tool call, then the answer
CALLS = [(1_200_000, 100_000), (800_000, 100_000)]


async def _run(redis: Redis, run_id: str, **settings: Any) -> dict[str, list[dict[str, Any]]]:
    """One run of an agent on a model that calls the calculator, then answers; the
    rows the worker appended to the ingest stream, per table."""
    configured = WorkerSettings(worker_id="worker-usage", openai_base_url="http://llm.test/v1",
                                **settings)
    (first, second) = CALLS
    server = Server(SSEStream(with_usage(tool_call_events('{"expression":"17 * 23"}'), *first)),
                    SSEStream(with_usage(content_events("17 * 23", " = 391"), *second)))
    tools = ToolRegistry([CALCULATOR])
    planner = OpenAIPlanner(configured, tools, system_prompt="Be exact.",
                            transport=httpx.MockTransport(server))
    worker = Worker(configured, redis, {"llm": Agent("llm", "A model.", planner, tools)})
    try:
        worker._start(QueueEntry(RUN_QUEUE, b"0-1"),
                      RunRequest(run_id=run_id, user_id=USER, thread_id="thr_u", agent="llm",
                                 input="what is 17 * 23"))
        await asyncio.wait_for(worker._running[run_id][1], 10)
    finally:
        await planner.aclose()
    page = await UserStreams(redis).read_after(USER, 0)
    events = [e for e in (json.loads(raw) for _, raw in page.events) if e["run_id"] == run_id]
    assert events[-1]["type"] == "agent_completed", events[-1]
    assert events[-1]["payload"]["result"] == "17 * 23 = 391"
    tables: dict[str, list[dict[str, Any]]] = {}
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(INGEST_STREAM))
    for _, fields in entries:
        tables.setdefault(fields[b"table"].decode(), []).extend(json.loads(fields[b"rows"]))
    return tables


def _priced(rows: list[dict[str, Any]]) -> list[tuple[str, int, int, Decimal, str, str]]:
    return [(r["model"], r["prompt_tokens"], r["completion_tokens"], Decimal(r["cost_usd"]),
             r["status"], r["source"]) for r in rows]


async def test_a_runs_model_calls_become_usage_rows_of_its_user_marked_as_the_agents(
        redis: Redis) -> None:
    tables = await _run(redis, "run_usage_listed", openai_model="gpt-4o-mini")
    usage = tables["usage"]
    # gpt-4o-mini at list price: $0.15 and $0.60 per million tokens
    assert _priced(usage) == [
        ("gpt-4o-mini", 1_200_000, 100_000, Decimal("0.24"), "ok", "agents"),
        ("gpt-4o-mini", 800_000, 100_000, Decimal("0.18"), "ok", "agents")]
    assert {r["user_id"] for r in usage} == {USER}
    assert all(r["latency_ms"] > 0 and r["ts"].endswith("Z") for r in usage)
    assert usage[0]["ts"] <= usage[1]["ts"]
    # the tool calls are recorded as before
    assert [(r["tool"], r["ok"], r["run_id"]) for r in tables["tool_calls"]] == [
        ("calculator", True, "run_usage_listed")]


async def test_the_workers_own_price_prices_a_self_hosted_model(redis: Redis) -> None:
    tables = await _run(redis, "run_usage_own", openai_model="llama3.1:8b",
                        openai_price_per_million="0.20, 0.80")
    assert [cost for *_, cost, _, _ in _priced(tables["usage"])] == [
        Decimal("0.32"), Decimal("0.24")]  # 1.2 * 0.20 + 0.1 * 0.80; 0.8 * 0.20 + 0.08


async def test_a_model_without_a_price_is_recorded_at_0_and_said(
        redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agents.usage"):
        tables = await _run(redis, "run_usage_unpriced", openai_model="llama3.1:8b")
    assert _priced(tables["usage"]) == [
        ("llama3.1:8b", 1_200_000, 100_000, Decimal(0), "ok", "agents"),
        ("llama3.1:8b", 800_000, 100_000, Decimal(0), "ok", "agents")]
    assert caplog.text.count("no price for model 'llama3.1:8b'") == 1


@pytest.mark.parametrize("price", ["0.2", "a,b", "-1,2", "1,2,3", "NaN,1", ""])
def test_a_price_setting_that_is_not_two_prices_is_refused(price: str) -> None:
    with pytest.raises(ValueError, match="two prices"):
        WorkerSettings(openai_price_per_million=price)
