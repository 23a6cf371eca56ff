"""A run paused on a call that needs approval, then resumed by another runtime (as a
second worker would), against a real redis-server: the events tell one story."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from agents.context import Services
from agents.pause import decode
from agents.planner import Final, ToolCall
from agents.runtime import PAUSED, Agent, Resumed, Runtime
from agents.tools import CALCULATOR, ToolRegistry
from bridge.approvals import Approvals
from bridge.queue import RunRequest
from e2e.checks import check_run_invariants, check_schema
from tests.agents.test_runtime import ScriptedPlanner, _context, _events

CALL = ToolCall("calculator", {"expression": "6 * 7"}, "Using the calculator.")
AGENT = Agent("test", "test", ScriptedPlanner(CALL, Final("the answer is 42")),
              ToolRegistry([CALCULATOR]).requiring_approval(["calculator"]))


async def _pause(redis: Redis, run_id: str) -> tuple[Approvals, str]:
    approvals = Approvals(redis)
    ctx = _context(redis, run_id)
    ctx = type(ctx)(**{**ctx.__dict__, "services": Services(approvals=approvals)})
    runtime = Runtime(max_steps=5, tool_timeout_s=5, approval_timeout_s=30)
    assert await runtime.run(ctx, AGENT) == PAUSED
    events = await _events(redis, run_id)
    assert [e["type"] for e in events] == ["agent_started", "agent_thinking",
                                           "approval_required"]
    asked = events[-1]["payload"]
    assert asked["tool"] == "calculator" and asked["arguments"] == {"expression": "6 * 7"}
    assert asked["expires_at"].endswith("Z")
    return approvals, asked["call_id"]


async def _resume(redis: Redis, approvals: Approvals, run_id: str, call_id: str, *,
                  approve: bool) -> str:
    request = RunRequest(run_id=run_id, user_id="usr_rt", thread_id="thr_rt", agent="test",
                         input="go")
    assert (await approvals.answer(request, call_id, approve=approve,
                                   now_ms=int(time.time() * 1000))).value == "ok"
    taken = await approvals.take("usr_rt", run_id)
    assert taken is not None
    paused = decode(taken.state)
    ctx = _context(redis, run_id)  # a fresh context: nothing of the first one is kept
    ctx.emitter.resume(events=taken.events, pending=(paused.call_id, paused.call.tool))
    runtime = Runtime(max_steps=5, tool_timeout_s=5)
    return await runtime.run(ctx, AGENT, Resumed(paused, taken.approved))


async def test_an_approved_call_runs_on_resume_and_the_run_completes(redis: Redis) -> None:
    approvals, call_id = await _pause(redis, "run_ok")
    assert await _resume(redis, approvals, "run_ok", call_id, approve=True) == "agent_completed"
    events = await _events(redis, "run_ok")
    assert [e["type"] for e in events] == [
        "agent_started", "agent_thinking", "approval_required", "tool_executing",
        "tool_completed", "agent_completed"]
    assert events[3]["payload"]["call_id"] == events[4]["payload"]["call_id"] == call_id
    assert events[4]["payload"]["result"]["value"] == 42
    assert events[-1]["payload"]["tool_calls"] == 1
    assert [e["seq"] for e in events] == list(range(events[0]["seq"], events[0]["seq"] + 6))
    assert check_schema(events) == [] and check_run_invariants(events, ["run_ok"]) == []


async def test_a_rejected_call_is_told_to_the_planner_and_never_runs(redis: Redis) -> None:
    approvals, call_id = await _pause(redis, "run_no")
    assert await _resume(redis, approvals, "run_no", call_id, approve=False) \
        == "agent_completed"
    events = await _events(redis, "run_no")
    types = [e["type"] for e in events]
    assert "tool_executing" not in types
    completed = next(e for e in events if e["type"] == "tool_completed")["payload"]
    assert completed["call_id"] == call_id and completed["ok"] is False
    assert completed["error"]["code"] == "rejected"
    assert check_schema(events) == [] and check_run_invariants(events, ["run_no"]) == []


async def test_a_run_that_cannot_pause_fails_clearly(redis: Redis) -> None:
    ctx = _context(redis, "run_np")  # no approvals store: this runtime cannot pause
    assert await Runtime(max_steps=5, tool_timeout_s=5).run(ctx, AGENT) == "agent_failed"
    events = await _events(redis, "run_np")
    assert events[-1]["payload"]["error"]["code"] == "agent_error"
    assert check_run_invariants(events, ["run_np"]) == []
