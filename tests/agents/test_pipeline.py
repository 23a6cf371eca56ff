"""The built-in rules: which steps each kind of request takes, decided from the
transcript alone (the planner keeps no state)."""

from typing import Any

import pytest

from agents.builtin_tools import EstimateSavingsArgs, _estimate_savings
from agents.followups import resolve_spend
from agents.pipeline import PipelinePlanner, classify, compare_report, spend_report
from agents.planner import Decision, Final, Think, ToolCall, ToolOutcome, Transcript

SPEND = "What did I spend on each model over the last 7 days, and how can I cut it?"
USAGE = {"items": [
    {"key": "gpt-4o", "requests": 10, "prompt_tokens": 1, "completion_tokens": 1,
     "cost_usd": 12.345, "p50_latency_ms": 900, "short_requests": 6,
     "short_prompt_tokens": 6000, "short_completion_tokens": 600, "short_cost_usd": 0.021},
    {"key": "gpt-4o-mini", "requests": 3, "prompt_tokens": 1, "completion_tokens": 1,
     "cost_usd": 0.5, "p50_latency_ms": 300, "short_requests": 1,
     "short_prompt_tokens": 10, "short_completion_tokens": 10, "short_cost_usd": 0.000008}]}


@pytest.mark.parametrize(("text", "intent"), [
    (SPEND, "spend"), ("what is 17 * 23", "arithmetic"), ("What time is it?", "time"),
    ('search my messages for "invoice"', "search"), ("hello", "help"),
    ("which model costs me most this month", "spend"),
])
def test_classifies(text: str, intent: str) -> None:
    assert classify(text) == intent


@pytest.mark.parametrize(("text", "days"), [
    (SPEND, 7), ("usage over the past 30 days", 30), ("my spend this month", 30),
    ("what did I spend today", 1), ("my spend", 7), ("my usage over the last 900 days", 365)])
def test_days_asked(text: str, days: int) -> None:
    query = resolve_spend([], text)
    assert query is not None and query.days == days


async def _play(planner: PipelinePlanner, text: str, results: dict[str, Any]
                ) -> list[Decision]:
    transcript, decisions = Transcript(input=text), []
    for _ in range(10):
        decision = await planner.next_step(transcript)
        decisions.append(decision)
        if isinstance(decision, Final):
            return decisions
        if isinstance(decision, Think):
            transcript.thoughts.append(decision)
        else:
            transcript.outcomes.append(ToolOutcome(decision, True, results[decision.tool]))
    raise AssertionError("no answer")


async def test_the_supervisor_chains_triage_data_optimization_report() -> None:
    savings = await _estimate_savings(
        None, EstimateSavingsArgs.model_validate({"items": USAGE["items"]}))  # type: ignore[arg-type]
    decisions = await _play(PipelinePlanner(), SPEND, {
        "query_usage": USAGE, "estimate_savings": savings})
    assert [type(d).__name__ for d in decisions] == ["Think", "ToolCall", "ToolCall", "Final"]
    assert [d.agent for d in decisions] == ["triage", "data", "optimization", "report"]
    data = decisions[1]
    assert isinstance(data, ToolCall)
    assert data.arguments == {"days": 7, "offset_days": 0, "group_by": "model"}
    final = decisions[-1]
    assert isinstance(final, Final) and "".join(final.deltas) == final.answer
    assert "- gpt-4o: 10 requests, $12.35" in final.answer  # half up, to the cent
    assert "- gpt-4o-mini: 3 requests, $0.50" in final.answer
    assert "$12.85 on 13 requests" in final.answer
    assert "Move the 6 requests on gpt-4o" in final.answer


async def test_without_asking_for_cuts_there_is_no_optimization() -> None:
    decisions = await _play(PipelinePlanner(), "what did I spend per model last 30 days",
                            {"query_usage": USAGE})
    assert [d.agent for d in decisions] == ["triage", "data", "report"]


async def test_arithmetic_clock_and_search() -> None:
    calc = await _play(PipelinePlanner(), "what is 17 * 23",
                       {"calculator": {"expression": "17 * 23", "value": 391}})
    assert isinstance(calc[-1], Final) and calc[-1].answer == "17 * 23 = 391"
    clock = await _play(PipelinePlanner(), "what time is it in Europe/Paris", {"clock": {
        "timezone": "Europe/Paris", "iso": "2026-11-25T10:00:00+01:00", "weekday": "Wed"}})
    first = clock[0]
    assert isinstance(first, ToolCall) and first.arguments == {"timezone": "Europe/Paris"}
    search = await _play(PipelinePlanner(), 'search my messages for "invoice"', {
        "thread_search": {"text": "invoice", "matches": []}})
    first = search[0]
    assert isinstance(first, ToolCall) and first.arguments == {"text": "invoice"}
    assert isinstance(search[-1], Final) and "invoice" in search[-1].answer


def test_empty_usage_is_said_plainly() -> None:
    assert spend_report(7, [], None, True) == "No AI usage was recorded in the last 7 days."


def test_the_agents_own_part_of_the_spend_is_said_apart() -> None:
    items = [{**USAGE["items"][0], "agents_requests": 0, "agents_cost_usd": 0.0},
             {**USAGE["items"][1], "agents_requests": 2, "agents_cost_usd": 0.415}]
    report = spend_report(7, items, None, False)
    assert report.splitlines() == [
        "Over the last 7 days you spent $12.85 on 13 requests across 2 models:",
        "- gpt-4o: 10 requests, $12.35", "- gpt-4o-mini: 3 requests, $0.50",
        "Of this, this platform's agents spent $0.42 (2 model calls)."]
    one = [{**items[1], "agents_requests": 1}]
    assert spend_report(7, one, None, False).endswith("spent $0.42 (1 model call).")
    # none of it: no such line
    assert "agents" not in spend_report(7, items[:1], None, False)


def test_a_comparison_says_the_agents_part_of_each_period() -> None:
    query = resolve_spend([], "compare my spend with the week before")
    assert query is not None and query.compare
    now = [{"key": "gpt-4o-mini", "requests": 3, "cost_usd": 0.5, "agents_requests": 2,
            "agents_cost_usd": 0.42}]
    before = [{"key": "gpt-4o", "requests": 1, "cost_usd": 1.0, "agents_requests": 0,
               "agents_cost_usd": 0.0}]
    assert compare_report(query, now, before).splitlines()[-1] == (
        "Of these, this platform's agents spent $0.42 (2 model calls) and $0.00 "
        "(0 model calls).")
    assert "agents" not in compare_report(query, before, before)
