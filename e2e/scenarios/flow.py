"""Scenario 1, the full agent flow: a user asks what they spent, and the answer's
figures are the arithmetic of the records that user posted, not plausible text.

The supervisor runs triage → data (``query_usage``) → optimization
(``estimate_savings``) → report. The user is fresh, so only its own records can
be in the answer; records older than the question's 7 days are posted too and
must not count.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from agents.pricing import cents
from e2e.checks import check_all, check_isolation
from e2e.client import ChatClient, EventSocket
from e2e.scenarios.base import (
    PASSWORD,
    Context,
    ScenarioResult,
    Target,
    delivery_ms,
    eventually,
    unique_email,
)
from e2e.usage import generate, totals

__all__ = ["QUESTION", "agent_flow", "arithmetic_flow", "expected_lines"]

QUESTION = "What did I spend on each model over the last 7 days, and how can I cut it?"
PIPELINE = ("triage", "data", "optimization", "report")


def expected_lines(records: list[dict[str, Any]], since: datetime) -> list[str]:
    """The answer's line per model, from the records alone."""
    return [f"- {model}: {count:,} requests, {cents(cost)}"
            for model, (count, cost) in totals(records, since=since).items()]


async def _post_records(ctx: Context, client: ChatClient) -> list[dict[str, Any]]:
    settings = ctx.settings
    now = datetime.now(UTC)
    key = client.user["id"]
    recent = generate(key, int(settings["days"]), end=now, per_day=int(settings["per_day"]))
    old = generate(key + "/old", 4, end=now - timedelta(days=10),
                   per_day=int(settings["per_day"]))
    started = time.monotonic()
    accepted = await client.post_usage(old + recent)
    ctx.result.expect(accepted == len(old) + len(recent),
                      f"{accepted} of {len(old) + len(recent)} usage records accepted")

    async def visible() -> bool:
        return await client.usage_requests() >= len(old) + len(recent)

    ctx.result.expect(await eventually(visible, timeout=30),
                      "the posted usage records were not visible within 30 s")
    ctx.result.metrics["usage_visible_ms"] = (time.monotonic() - started) * 1000
    return recent


def _check_answer(ctx: Context, run_id: str, events: list[dict[str, Any]],
                  recent: list[dict[str, Any]]) -> bool:
    """The answer holds the user's true figures and the pipeline ran as designed."""
    result = ctx.result
    before = len(result.failures)
    terminal = events[-1] if events else {}
    if not result.expect(terminal.get("type") == "agent_completed",
                         f"{run_id} ended with {terminal.get('type')}: "
                         f"{terminal.get('payload')}"):
        return False
    answer = terminal["payload"]["result"]
    since = datetime.now(UTC) - timedelta(days=7)
    for line in expected_lines(recent, since):
        result.expect(line in answer, f"{run_id}: {line!r} is not in the answer {answer!r}")
    total = sum((cost for _, cost in totals(recent).values()), Decimal(0))
    result.expect(f"you spent {cents(total)} on {len(recent):,} requests" in answer,
                  f"{run_id}: the total {cents(total)} on {len(recent):,} requests is "
                  f"not in {answer!r}")
    tools = [e["payload"]["tool"] for e in events if e["type"] == "tool_completed"]
    result.expect(tools == ["query_usage", "estimate_savings"],
                  f"{run_id}: tools {tools}, expected query_usage then estimate_savings")
    result.expect(all(e["payload"]["ok"] for e in events if e["type"] == "tool_completed"),
                  f"{run_id}: a tool call failed")
    agents = list(dict.fromkeys(e["agent"] for e in events if e["type"] != "agent_started"))
    result.expect([a for a in agents if a in PIPELINE] == list(PIPELINE),
                  f"{run_id}: stages ran as {agents}, expected {list(PIPELINE)}")
    streamed = "".join(e["payload"]["delta"] for e in events if e["type"] == "partial_result")
    result.expect(streamed == answer, f"{run_id}: the streamed deltas differ from the answer")
    result.count("tools_executed", len(tools))
    return len(result.failures) == before


async def _one_run(ctx: Context, client: ChatClient, socket: EventSocket, number: int,
                   recent: list[dict[str, Any]]) -> str | None:
    thread = await client.create_thread(f"spend question {number}")
    sent = time.monotonic()
    answer = await socket.request({"type": "start_run", "thread_id": thread["id"],
                                   "input": QUESTION})
    if not ctx.result.expect(answer.get("type") == "run_accepted",
                             f"start_run answered {answer}"):
        return None
    run_id: str = answer["run_id"]
    await socket.wait_terminal(run_id, timeout=30)
    received = [r for r in socket.frames if r.frame.get("run_id") == run_id and "seq" in r.frame]
    ctx.result.sample("run_ms", (received[-1].at - sent) * 1000)
    ctx.result.sample("response_ms", (received[0].at - sent) * 1000)
    ctx.result.sample("execution_ms", (received[-1].at - received[0].at) * 1000)
    for value in delivery_ms(received):
        ctx.result.sample("event_latency_ms", value)
    events = [r.frame for r in received]
    if _check_answer(ctx, run_id, events, recent):
        ctx.result.count("succeeded")
    run = await client.wait_run(run_id, timeout=15)
    ctx.result.expect(run["status"] == "succeeded" and run.get("result") == (
        events[-1]["payload"].get("result")),
        f"{run_id} over REST: {run['status']}, result {run.get('result')!r}")
    messages = await client.messages(thread["id"])
    roles = [(m["role"], m["run_id"]) for m in messages]
    ctx.result.expect(roles == [("user", run_id), ("assistant", run_id)],
                      f"{run_id}: thread messages are {roles}")
    stored = await client.run_events(run_id, after=socket.welcome["last_seq"])
    ctx.result.count("events_sent", len(stored))
    ctx.result.count("events_received", len(events))
    return run_id


async def agent_flow(ctx: Context) -> None:
    """The supervisor answers a fresh user's spend question, ``runs`` times."""
    result = ctx.result
    runs = int(ctx.settings["runs"])
    async with ctx.client() as client:
        started = time.monotonic()
        await client.signup(unique_email("flow"), PASSWORD)
        result.sample("signup_ms", (time.monotonic() - started) * 1000)
        recent = await _post_records(ctx, client)
        ctx.say(f"{len(recent)} usage records in the last 7 days visible; asking {runs} times")
        socket = await ctx.connect(client)
        run_ids: list[str] = []
        try:
            for number in range(1, runs + 1):
                run_id = await _one_run(ctx, client, socket, number, recent)
                if run_id is not None:
                    run_ids.append(run_id)
        finally:
            await socket.close()
        result.failures += check_all(socket.events, set(run_ids), client.user["id"],
                                     first=socket.welcome["last_seq"] + 1)
        result.metrics["isolation_violations"] = len(
            check_isolation(socket.events, set(run_ids), client.user["id"]))
        result.expect(all(e["epoch"] == socket.welcome["epoch"] for e in socket.events),
                      "an event's epoch differs from the welcome's")

        async def in_analytics() -> bool:
            seen = {r["run_id"] for r in await client.analytics_runs()}
            return set(run_ids) <= seen

        started = time.monotonic()
        result.expect(await eventually(in_analytics, timeout=20),
                      "the runs did not all reach /api/analytics/runs within 20 s")
        result.metrics["analytics_visible_ms"] = (time.monotonic() - started) * 1000
    result.metrics["success_rate"] = result.metrics.get("succeeded", 0) / runs
    sent = result.metrics.get("events_sent", 0)
    result.metrics["delivery_rate"] = result.metrics.get("events_received", 0) / sent if sent else 0


async def arithmetic_flow(target: Target) -> ScenarioResult:
    """One user asks "what is 17 * 23" and sees the whole run arrive, in order: the
    quickest proof that a stack works (used after faults in the tests)."""
    result = ScenarioResult("arithmetic_flow")
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email("flow"), PASSWORD)
        socket = await client.connect(target.ws_url)
        try:
            thread = await client.create_thread("arithmetic")
            answer = await socket.request({"type": "start_run", "thread_id": thread["id"],
                                           "input": "what is 17 * 23"})
            if not result.expect(answer.get("type") == "run_accepted",
                                 f"start_run answered {answer}"):
                return result
            run_id = answer["run_id"]
            terminal = await socket.wait_terminal(run_id, timeout=30)
            events = socket.run_events(run_id)
            expected = ["agent_started", "agent_thinking", "tool_executing", "tool_completed",
                        "agent_completed"]
            result.expect([e["type"] for e in events] == expected,
                          f"event types {[e['type'] for e in events]} != {expected}")
            result.failures += check_all(events, {run_id}, client.user["id"],
                                         first=socket.welcome["last_seq"] + 1)
            result.expect("391" in terminal["payload"].get("result", ""),
                          f"the answer lacks 391: {terminal['payload']}")
            run = await client.wait_run(run_id, timeout=10)
            result.expect(run["status"] == "succeeded", f"run status over REST is {run['status']}")
            result.metrics["events_received"] = len(events)
        finally:
            await socket.close()
    return result
