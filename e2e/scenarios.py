"""Scenarios: what a user does, with every expectation checked and measured.

A scenario gets a :class:`Target` (where the stack answers), so the same code
runs against the local stack and docker compose.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from e2e.checks import check_all
from e2e.client import ChatClient

__all__ = ["SCENARIOS", "ScenarioResult", "Target", "agent_flow"]

PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Target:
    auth_url: str
    backend_url: str
    ws_url: str


@dataclass
class ScenarioResult:
    name: str
    failures: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def expect(self, condition: bool, failure: str) -> bool:
        if not condition:
            self.failures.append(failure)
        return condition


def unique_email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


async def _eventually(probe: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe():
            return True
        await asyncio.sleep(0.2)
    return False


async def agent_flow(target: Target) -> ScenarioResult:
    """One user asks "what is 17 * 23" and sees the whole run arrive, in order."""
    result = ScenarioResult("agent_flow")
    started = time.monotonic()
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email("flow"), PASSWORD)
        result.metrics["signup_ms"] = (time.monotonic() - started) * 1000
        connect_started = time.monotonic()
        socket = await client.connect(target.ws_url)
        result.metrics["ws_connect_ms"] = (time.monotonic() - connect_started) * 1000
        try:
            thread = await client.create_thread("arithmetic")
            run_started = time.monotonic()
            answer = await socket.request({"type": "start_run", "thread_id": thread["id"],
                                           "input": "what is 17 * 23"})
            if not result.expect(answer.get("type") == "run_accepted",
                                 f"start_run answered {answer}"):
                return result
            run_id = answer["run_id"]
            terminal = await socket.wait_terminal(run_id, timeout=30)
            result.metrics["run_latency_ms"] = (time.monotonic() - run_started) * 1000
            events = socket.run_events(run_id)
            _check_events(result, events, run_id, socket.welcome, client.user["id"])
            result.expect("391" in terminal["payload"].get("result", ""),
                          f"the answer lacks 391: {terminal['payload']}")
            await _check_records(result, client, thread["id"], run_id)
        finally:
            await socket.close()
    result.metrics["duration_ms"] = (time.monotonic() - started) * 1000
    return result


def _check_events(result: ScenarioResult, events: list[dict[str, Any]], run_id: str,
                  welcome: dict[str, Any], user_id: str) -> None:
    expected = ["agent_started", "agent_thinking", "tool_executing", "tool_completed",
                "agent_completed"]
    result.expect([e["type"] for e in events] == expected,
                  f"event types {[e['type'] for e in events]} != {expected}")
    result.failures += check_all(events, {run_id}, user_id, first=welcome["last_seq"] + 1)
    result.expect(all(e["epoch"] == welcome["epoch"] for e in events),
                  "an event's epoch differs from the welcome's")
    result.metrics["events_received"] = len(events)


async def _check_records(result: ScenarioResult, client: ChatClient, thread_id: str,
                         run_id: str) -> None:
    run = await client.wait_run(run_id, timeout=10)
    result.expect(run["status"] == "succeeded", f"run status over REST is {run['status']}")
    result.expect("391" in run.get("result", ""), f"run result lacks 391: {run.get('result')}")
    messages = await client.messages(thread_id)
    roles = [(m["role"], m["run_id"]) for m in messages]
    result.expect(roles == [("user", run_id), ("assistant", run_id)],
                  f"thread messages are {roles}")

    async def in_analytics() -> bool:
        return any(r["run_id"] == run_id for r in await client.analytics_runs())

    ingest_started = time.monotonic()
    result.expect(await _eventually(in_analytics, timeout=15),
                  "the run did not reach /api/analytics/runs within 15 s")
    result.metrics["analytics_visible_ms"] = (time.monotonic() - ingest_started) * 1000


SCENARIOS: dict[str, Callable[[Target], Awaitable[ScenarioResult]]] = {
    "agent_flow": agent_flow,
}
