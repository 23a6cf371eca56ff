"""The runtime's endings, each with its terminal event, against a real redis-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis

from agents.context import RunContext
from agents.errors import ProviderError, ToolError
from agents.planner import Final, ToolCall, Transcript
from agents.runtime import ANSWER_CUT, MAX_RESULT_CHARS, Agent, Runtime, bounded_result
from agents.tools import CALCULATOR, Tool, ToolRegistry
from bridge.batch import split_batch
from bridge.emitter import EventEmitter, RunEmitter
from bridge.streams import UserStreams
from e2e.checks import check_run_invariants, check_schema
from servicekit.rediskeys import UserKeys


class NoArgs(BaseModel):
    pass


async def _slow(_: RunContext, __: NoArgs) -> str:
    await asyncio.sleep(30)
    return "late"


async def _big(_: RunContext, __: NoArgs) -> str:
    return "x" * (MAX_RESULT_CHARS * 4)


async def _broken(_: RunContext, __: NoArgs) -> str:
    raise ToolError("broken", "this tool always fails")


TOOLS = ToolRegistry([CALCULATOR, Tool("slow", "sleeps", NoArgs, _slow, timeout_s=0.2),
                      Tool("sleepy", "sleeps long", NoArgs, _slow, timeout_s=60),
                      Tool("broken", "fails", NoArgs, _broken),
                      Tool("big", "answers a lot", NoArgs, _big)])


class ScriptedPlanner:
    """A planner that plays a fixed list of steps (the runtime's test model)."""

    def __init__(self, *steps: ToolCall | Final) -> None:
        self._steps = list(steps)

    async def next_step(self, transcript: Transcript) -> ToolCall | Final:
        return self._steps[len(transcript.outcomes)]


def _context(redis: Redis, run_id: str, timeout: float = 10.0) -> RunContext:
    emitter = RunEmitter(EventEmitter(redis), user_id="usr_rt", run_id=run_id,
                         thread_id="thr_rt", agent="test")
    return RunContext(run_id=run_id, user_id="usr_rt", thread_id="thr_rt", agent="test",
                      input="go", emitter=emitter,
                      deadline=asyncio.get_running_loop().time() + timeout)


async def _events(redis: Redis, run_id: str) -> list[dict[str, Any]]:
    page = await UserStreams(redis).read_after("usr_rt", 0)
    return [e for e in (json.loads(raw) for _, raw in page.events) if e["run_id"] == run_id]


async def _run(redis: Redis, run_id: str, *steps: ToolCall | Final,
               timeout: float = 10.0) -> tuple[str, list[dict[str, Any]]]:
    agent = Agent("test", "test", ScriptedPlanner(*steps), TOOLS)
    ending = await Runtime(max_steps=5, tool_timeout_s=5).run(_context(redis, run_id, timeout),
                                                              agent)
    events = await _events(redis, run_id)
    assert check_schema(events) == []
    assert check_run_invariants(events, [run_id]) == []
    return ending, events


def _tool_result(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e["payload"] for e in events if e["type"] == "tool_completed")


async def test_a_failing_tool_is_reported_and_the_run_goes_on(redis: Redis) -> None:
    ending, events = await _run(redis, "run_fail", ToolCall("broken", {}, "try"),
                                Final("done anyway"))
    assert ending == "agent_completed"
    assert _tool_result(events)["error"] == {"code": "broken", "message": "this tool always fails"}


async def test_a_slow_tool_times_out(redis: Redis) -> None:
    ending, events = await _run(redis, "run_slow", ToolCall("slow", {}, "wait"), Final("ok"))
    assert ending == "agent_completed"
    assert _tool_result(events)["error"]["code"] == "tool_timeout"


async def test_invalid_arguments_never_reach_the_tool(redis: Redis) -> None:
    ending, events = await _run(redis, "run_args", ToolCall("calculator", {"expr": 1}, "x"),
                                Final("ok"))
    assert ending == "agent_completed"
    assert _tool_result(events)["error"]["code"] == "invalid_arguments"


async def test_an_unknown_tool_is_a_tool_error(redis: Redis) -> None:
    _, events = await _run(redis, "run_unknown", ToolCall("nope", {}, "x"), Final("ok"))
    assert _tool_result(events)["error"]["code"] == "unknown_tool"


async def test_the_deadline_ends_the_run_as_timeout(redis: Redis) -> None:
    ending, events = await _run(redis, "run_deadline", ToolCall("sleepy", {}, "wait"),
                                Final("never"), timeout=0.3)
    assert ending == "agent_failed"
    assert events[-1]["payload"]["cause"] == "timeout"


async def test_cancel_during_a_tool_ends_within_a_second(redis: Redis) -> None:
    ctx = _context(redis, "run_cancel")
    agent = Agent("test", "test", ScriptedPlanner(ToolCall("sleepy", {}, "wait"), Final("x")),
                  TOOLS)
    task = asyncio.create_task(Runtime(max_steps=5, tool_timeout_s=5).run(ctx, agent))
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    cancelled_at = loop.time()
    ctx.stop_reason = "user"
    task.cancel()
    assert await task == "agent_cancelled"
    assert loop.time() - cancelled_at < 1.0
    events = await _events(redis, "run_cancel")
    assert [e["type"] for e in events][-2:] == ["tool_completed", "agent_cancelled"]
    assert events[-1]["payload"] == {"by": "user"}


async def test_too_many_steps_fail_cleanly_with_the_step_limit_code(redis: Redis) -> None:
    steps = [ToolCall("calculator", {"expression": "1+1"}, "again")] * 6
    ending, events = await _run(redis, "run_steps", *steps)
    assert ending == "agent_failed"
    assert [e["type"] for e in events].count("tool_completed") == 5  # max_steps=5, all ran
    assert events[-1]["payload"]["cause"] == "error"
    assert events[-1]["payload"]["error"] == {
        "code": "step_limit", "message": "no answer within 5 steps (the run's step limit)"}


async def test_an_answer_at_the_last_step_is_not_a_step_limit(redis: Redis) -> None:
    steps = [ToolCall("calculator", {"expression": "1+1"}, "again")] * 4
    ending, events = await _run(redis, "run_last_step", *steps, Final("2"))
    assert ending == "agent_completed"
    assert events[-1]["payload"]["result"] == "2"


def test_a_result_within_the_bound_is_kept_whole() -> None:
    assert bounded_result({"a": [1, 2]}, 100) == {"a": [1, 2]}
    assert bounded_result("é" * 10, 12) == "é" * 10  # characters, quotes included


async def test_a_large_tool_result_is_kept_truncated_with_a_marker(redis: Redis) -> None:
    ending, events = await _run(redis, "run_big", ToolCall("big", {}, "ask"), Final("done"))
    assert ending == "agent_completed"
    result = _tool_result(events)["result"]
    assert result["truncated"] is True and result["chars"] == MAX_RESULT_CHARS * 4 + 2
    assert len(result["preview"]) == MAX_RESULT_CHARS


async def test_a_streamed_answer_is_cut_at_the_limit_and_its_stream_closed(
        redis: Redis) -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[str]:  # a model that never stops talking
        try:
            while True:
                yield "word " * 100
        finally:
            closed.set()

    agent = Agent("test", "test", ScriptedPlanner(Final("", stream=endless())), TOOLS)
    ending = await Runtime(max_steps=5, tool_timeout_s=5, max_answer_chars=2000).run(
        _context(redis, "run_cut"), agent)
    events = await _events(redis, "run_cut")
    assert ending == "agent_completed" and closed.is_set()
    answer = events[-1]["payload"]["result"]
    assert answer.endswith(ANSWER_CUT) and len(answer) == 2000 + len(ANSWER_CUT)
    deltas = "".join(e["payload"]["delta"] for e in events if e["type"] == "partial_result")
    assert deltas == answer
    assert check_run_invariants(events, ["run_cut"]) == []


async def _published_deltas(redis: Redis, run_id: str, *steps: ToolCall | Final
                            ) -> tuple[str, list[list[str]]]:
    """Runs the steps; returns the ending and the deltas of each message published
    on the user's channel (one message per script call)."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(UserKeys("usr_rt").channel)
    try:
        ending, _ = await _run(redis, run_id, *steps)
        messages: list[list[str]] = []
        while (message := await pubsub.get_message(timeout=0.5)) is not None:
            if message["type"] != "message":  # the subscription's confirmation
                continue
            data = message["data"]
            events = [json.loads(line) for line in split_batch(
                data.decode() if isinstance(data, bytes) else data)]
            deltas = [e["payload"]["delta"] for e in events if e["type"] == "partial_result"]
            if deltas:
                messages.append(deltas)
        return ending, messages
    finally:
        await pubsub.aclose()


async def test_pieces_that_arrive_while_an_emit_is_in_flight_go_out_together(
        redis: Redis) -> None:
    async def model() -> AsyncIterator[str]:  # one piece, then nine at once
        yield "p1 "
        await asyncio.sleep(0)  # the runtime takes the first and emits it
        for n in range(2, 11):
            yield f"p{n} "

    ending, messages = await _published_deltas(redis, "run_burst",
                                               Final("", stream=model()))
    assert ending == "agent_completed"
    # an event per piece, as they came; the nine that came during the first emit
    # went in one script call, not nine
    assert messages == [["p1 "], [f"p{n} " for n in range(2, 11)]]


async def test_the_pieces_read_before_a_stream_failed_go_out_before_its_error(
        redis: Redis) -> None:
    async def model() -> AsyncIterator[str]:
        yield "half "
        yield "an answer"
        raise ProviderError("the model provider failed mid-stream")

    ending, events = await _run(redis, "run_broken_stream", Final("", stream=model()))
    assert ending == "agent_failed"
    deltas = [e["payload"]["delta"] for e in events if e["type"] == "partial_result"]
    assert deltas == ["half ", "an answer"]
    assert events[-1]["type"] == "agent_failed"
    assert "mid-stream" in events[-1]["payload"]["error"]["message"]


async def test_a_run_that_times_out_mid_answer_closes_the_models_stream(
        redis: Redis) -> None:
    closed = asyncio.Event()

    async def model() -> AsyncIterator[str]:  # starts, then stalls
        try:
            yield "the start "
            await asyncio.sleep(30)
            yield "never sent"
        finally:
            closed.set()

    ending, events = await _run(redis, "run_stalled", Final("", stream=model()), timeout=0.5)
    assert ending == "agent_failed" and closed.is_set()
    assert [e["payload"]["delta"] for e in events
            if e["type"] == "partial_result"] == ["the start "]
    assert events[-1]["payload"]["cause"] == "timeout"
