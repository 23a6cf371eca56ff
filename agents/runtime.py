"""The agent runtime: the step loop of one run, ending with exactly one terminal event.

planner → ``tool_executing`` → validated call with a timeout → ``tool_completed`` →
planner … → ``agent_completed``. A tool error is reported to the planner and the
run goes on; a deadline, a cancellation, ``max_steps`` steps without an answer
(``step_limit``) or an unexpected error end the run with the matching terminal
event, whatever step it was in. A call of a tool that needs its user's approval
pauses the run: its state is stored (``agents.pause``, ``bridge.approvals``),
``approval_required`` is emitted and the worker's slot is free; the answered run
goes on from there on any worker (:class:`Resumed`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ulid import ULID

from agents.context import RunContext, ToolRecord
from agents.errors import AgentError, StepLimitError, ToolError
from agents.pause import Paused, encode
from agents.planner import Decision, Final, Planner, ToolCall, ToolOutcome, Transcript
from agents.tools import ToolRegistry
from bridge.errors import BridgeError
from bridge.events import Cause, cancelled, completed, failed, utc_timestamp
from bridge.memory import tool_note

__all__ = ["ANSWER_CUT", "MAX_ANSWER_CHARS", "MAX_RESULT_CHARS", "PAUSED", "Agent", "Resumed",
           "Runtime", "bounded_result"]

log = logging.getLogger(__name__)

#: the most of one tool result (as JSON) a run keeps in its transcript and events
MAX_RESULT_CHARS = 32 * 1024
#: the most of a model's streamed answer a run keeps: beyond, the stream is closed
#: (the provider stops generating) and the answer ends with :data:`ANSWER_CUT`
MAX_ANSWER_CHARS = 32 * 1024
ANSWER_CUT = "\n[answer cut: longer than the run's limit]"
#: what :meth:`Runtime.run` returns for a run that waits for a tool approval
PAUSED = "paused"


@dataclass(frozen=True)
class Agent:
    name: str
    description: str
    planner: Planner
    tools: ToolRegistry

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "tools": [{**tool.schema(), "needs_approval": tool.needs_approval}
                          for tool in self.tools]}


@dataclass(frozen=True)
class Resumed:
    """A paused run taken back with its user's answer."""

    paused: Paused
    approved: bool


class Runtime:
    def __init__(self, *, max_steps: int, tool_timeout_s: float, stream_batch: int = 64,
                 max_result_chars: int = MAX_RESULT_CHARS,
                 max_answer_chars: int = MAX_ANSWER_CHARS,
                 approval_timeout_s: float = 300.0) -> None:
        self._max_steps = max_steps
        self._approval_timeout_s = approval_timeout_s
        self._max_result_chars = max_result_chars
        self._max_answer_chars = max_answer_chars
        self._tool_timeout_s = tool_timeout_s
        self._stream_batch = stream_batch

    async def run(self, ctx: RunContext, agent: Agent, resumed: Resumed | None = None) -> str:
        """Execute the run, or go on with a paused one that was answered (``resumed``);
        returns the terminal event type it emitted, or :data:`PAUSED` when a call
        waits for its user's approval (the run's state is then stored, not held)."""
        if resumed is None:
            started = time.monotonic()
            transcript = Transcript(input=ctx.input, history=ctx.memory,
                                    model_calls=ctx.model_calls)
            first_step = 1
        else:
            paused = resumed.paused
            started = time.monotonic() - paused.elapsed_s
            transcript = paused.transcript
            transcript.model_calls = ctx.model_calls  # this worker's, recorded at its end
            ctx.tool_calls = paused.tool_calls
            first_step = paused.step + 1
        emit = ctx.emitter.emit
        try:
            if resumed is None:
                await emit("agent_started", {"input": ctx.input})
            async with asyncio.timeout_at(ctx.deadline):
                if resumed is not None:
                    transcript.outcomes.append(await self._answered(ctx, agent, resumed))
                try:
                    answer = await self._steps(ctx, agent, transcript, first_step)
                except _Pause as pause:
                    await self._park(ctx, transcript, pause,
                                     elapsed_s=time.monotonic() - started)
                    return PAUSED
            # what the tools returned, summarised, goes with the end to the run's
            # record: the memory of the thread's later runs (bridge.memory)
            await emit("agent_completed", completed(answer, duration_ms=_ms_since(started),
                                                    tool_calls=ctx.tool_calls),
                       lifecycle_extra=_memory_extra(ctx, transcript) or None)
            return "agent_completed"
        except TimeoutError:
            await self._fail(ctx, "run_timeout", "the run exceeded its deadline", "timeout")
            return "agent_failed"
        except asyncio.CancelledError:
            if ctx.stop_reason is None:
                raise
            task = asyncio.current_task()
            while task is not None and task.cancelling():
                task.uncancel()  # every request (repeated ones too) is answered here
            return await self.end_stopped(ctx)
        except BridgeError:
            raise  # events cannot be delivered: nothing more can be told to the user
        except StepLimitError as exc:
            log.info("run %s: %s", ctx.run_id, exc)
            await self._fail(ctx, exc.code, str(exc), "error")
            return "agent_failed"
        except Exception as exc:
            log.exception("run %s failed", ctx.run_id)
            code = "agent_error" if isinstance(exc, AgentError) else "internal_error"
            await self._fail(ctx, code, str(exc) or type(exc).__name__, "error")
            return "agent_failed"

    async def end_stopped(self, ctx: RunContext) -> str:
        """End a run whose stop was requested (``ctx.stop_reason``), whatever it had
        emitted so far; returns the terminal event type."""
        ctx.stopping = True
        by = ctx.stop_reason
        assert by is not None, "a run ends stopped only once a stop was requested"
        if by == "worker_lost":
            await self._fail(ctx, "worker_lost", "the worker stopped during the run",
                             "worker_lost")
            return "agent_failed"
        await self._ensure_started(ctx)
        await ctx.emitter.emit("agent_cancelled", cancelled(by))
        return "agent_cancelled"

    async def _ensure_started(self, ctx: RunContext) -> None:
        if not ctx.emitter.started:
            await ctx.emitter.emit("agent_started", {"input": ctx.input})

    async def _fail(self, ctx: RunContext, code: str, message: str, cause: Cause) -> None:
        await self._ensure_started(ctx)
        await ctx.emitter.emit("agent_failed", failed(code, message, cause))

    async def _steps(self, ctx: RunContext, agent: Agent, transcript: Transcript,
                     first_step: int) -> str:
        for step in range(first_step, self._max_steps + 1):
            decision = await agent.planner.next_step(transcript)
            if decision.thought:
                thinking = {"text": decision.thought, "step": step}
                if _followed_at_once(agent, decision):  # one round trip for both
                    ctx.emitter.hold("agent_thinking", thinking, agent=decision.agent)
                else:
                    await ctx.emitter.emit("agent_thinking", thinking, agent=decision.agent)
            if isinstance(decision, Final):
                return await self._stream(ctx, decision)
            if isinstance(decision, ToolCall):
                if agent.tools.needs_approval(decision.tool):
                    raise _Pause(step, decision)
                transcript.outcomes.append(await self._call(ctx, agent, decision))
            else:
                transcript.thoughts.append(decision)
        raise StepLimitError(self._max_steps)

    async def _stream(self, ctx: RunContext, final: Final) -> str:
        """Emit the answer as ``partial_result`` events; returns the answer. Paced
        deltas go one by one; unpaced ones in batches of one script call each; a
        provider's stream as it arrives (:meth:`_relay`)."""
        agent = final.agent
        if final.stream is not None:
            return await self._relay(ctx, final.stream, agent)
        # one delta (or one batch) at a time: a long answer is never held whole
        deltas = ({"delta": delta} for delta in final.deltas)
        if final.delta_interval_s:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for n, payload in enumerate(deltas, 1):
                await ctx.emitter.emit("partial_result", payload, agent=agent)
                # on a fixed schedule: the emit's own time does not slow the pace
                await asyncio.sleep(max(0.0, start + n * final.delta_interval_s - loop.time()))
        else:
            batch = list(itertools.islice(deltas, self._stream_batch))
            while batch:
                following = list(itertools.islice(deltas, self._stream_batch))
                if following:
                    await ctx.emitter.emit_many("partial_result", batch, agent=agent)
                else:  # the last ones go with the run's end, emitted at once after
                    for payload in batch:
                        ctx.emitter.hold("partial_result", payload, agent=agent)
                batch = following
        return final.answer

    async def _relay(self, ctx: RunContext, stream: AsyncIterator[str], agent: str | None
                     ) -> str:
        """A provider's answer, one ``partial_result`` per piece, cut at the run's
        limit; returns it. The stream is read on its own task: the pieces that
        arrive while an emit is in flight go together in the next one (one script
        call), so the answer keeps the model's pace whatever Redis's round trip.
        Pieces read before the stream failed go out before its error."""
        read: asyncio.Queue[str | None] = asyncio.Queue()  # None: the stream ended

        async def reader() -> None:
            room = self._max_answer_chars
            try:
                async for piece in stream:
                    if not piece:
                        continue
                    cut = len(piece) > room
                    piece = piece[:room] + (ANSWER_CUT if cut else "")
                    room -= len(piece)
                    read.put_nowait(piece)
                    if cut:  # no more of it is read: the request to the provider ends
                        return
            finally:
                read.put_nowait(None)

        pieces: list[str] = []
        task = asyncio.create_task(reader(), name=f"answer-{ctx.run_id}")
        try:
            ended = False
            while not ended:
                batch: list[str] = []
                piece = await read.get()
                while piece is not None:
                    batch.append(piece)
                    if len(batch) == self._stream_batch or read.empty():
                        break
                    piece = read.get_nowait()
                ended = piece is None
                if batch:
                    pieces += batch
                    await ctx.emitter.emit_many(
                        "partial_result", [{"delta": text} for text in batch], agent=agent)
            await task  # the stream's error, if any
        finally:
            task.cancel()
            await asyncio.wait((task,))
            if not task.cancelled():
                task.exception()  # retrieved: an emit's failure is the one raised
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        return "".join(pieces)

    async def _park(self, ctx: RunContext, transcript: Transcript, pause: _Pause, *,
                    elapsed_s: float) -> None:
        """Store the paused run, then tell its user the call waits for them."""
        if ctx.services.approvals is None:
            raise AgentError("this worker cannot pause a run for an approval")
        call = pause.call
        call_id = f"tcl_{ULID()}"
        expires = datetime.now(UTC) + timedelta(seconds=self._approval_timeout_s)
        paused = Paused(call_id=call_id, call=call, step=pause.step, transcript=transcript,
                        tool_calls=ctx.tool_calls, elapsed_s=elapsed_s,
                        expires_at=utc_timestamp(expires))
        asked = {"call_id": call_id, "tool": call.tool, "arguments": call.arguments,
                 "expires_at": paused.expires_at}
        await ctx.services.approvals.park(ctx.user_id, ctx.run_id, call_id=call_id,
                                          expires_ms=int(expires.timestamp() * 1000),
                                          state=encode(paused), asked=asked)
        await ctx.emitter.emit("approval_required", asked, agent=call.agent)

    async def _answered(self, ctx: RunContext, agent: Agent, resumed: Resumed) -> ToolOutcome:
        """The waiting call, approved (executed now) or rejected (its user's refusal
        goes to the planner as the call's error)."""
        paused = resumed.paused
        if resumed.approved:
            return await self._call(ctx, agent, paused.call, call_id=paused.call_id)
        call = paused.call
        error = {"code": "rejected", "message": f"the user rejected this call of {call.tool}"}
        await ctx.emitter.emit("tool_completed", {
            "call_id": paused.call_id, "tool": call.tool, "ok": False, "error": error,
            "duration_ms": 0}, agent=call.agent)
        ctx.tool_records.append(ToolRecord(
            tool=call.tool, agent=call.agent or ctx.agent, ok=False, error_code="rejected",
            duration_ms=0, ts=utc_timestamp()))
        return ToolOutcome(call=call, ok=False, result=error)

    async def _call(self, ctx: RunContext, agent: Agent, call: ToolCall, *,
                    call_id: str | None = None) -> ToolOutcome:
        call_id = call_id or f"tcl_{ULID()}"
        await ctx.emitter.emit("tool_executing", {"call_id": call_id, "tool": call.tool,
                                                  "arguments": call.arguments}, agent=call.agent)
        ctx.tool_calls += 1
        started = time.monotonic()
        payload: dict[str, Any] = {"call_id": call_id, "tool": call.tool}
        try:
            tool = agent.tools.get(call.tool)
            arguments = tool.validate(call.arguments)
            timeout = tool.timeout_s or self._tool_timeout_s
            try:
                result = await asyncio.wait_for(tool.function(ctx, arguments), timeout)
            except TimeoutError:
                raise ToolError("tool_timeout", f"{call.tool} took longer than {timeout}s"
                                ) from None
            payload.update(ok=True, result=bounded_result(result, self._max_result_chars))
        except ToolError as exc:
            payload.update(ok=False, error={"code": exc.code, "message": exc.message})
        payload["duration_ms"] = _ms_since(started)
        await ctx.emitter.emit("tool_completed", payload, agent=call.agent)
        ctx.tool_records.append(ToolRecord(
            tool=call.tool, agent=call.agent or ctx.agent, ok=payload["ok"],
            error_code="" if payload["ok"] else payload["error"]["code"],
            duration_ms=payload["duration_ms"], ts=utc_timestamp()))
        ok = payload["ok"]
        return ToolOutcome(call=call, ok=ok, result=payload["result"] if ok else payload["error"])


def _followed_at_once(agent: Agent, decision: Decision) -> bool:
    """Whether the decision's next event comes at once, with no wait before it: a
    call's ``tool_executing`` (unless the call waits for its user's approval), or
    an answer known whole (a stream's first piece may take a while)."""
    if isinstance(decision, ToolCall):
        return not agent.tools.needs_approval(decision.tool)
    return isinstance(decision, Final) and decision.stream is None


class _Pause(Exception):  # a control-flow signal, not an error
    """A call that needs its user's approval: the run pauses at ``step``."""

    def __init__(self, step: int, call: ToolCall) -> None:
        super().__init__(call.tool)
        self.step = step
        self.call = call


def bounded_result(result: Any, max_chars: int) -> Any:
    """``result``, or, when its JSON is longer than ``max_chars``, an explicit marker
    with the JSON's first ``max_chars`` characters: what a run keeps (and sends) of a
    tool's answer stays bounded."""
    text = json.dumps(result, default=str, ensure_ascii=False)
    if len(text) <= max_chars:
        return result
    return {"truncated": True, "chars": len(text), "preview": text[:max_chars]}


def _memory_extra(ctx: RunContext, transcript: Transcript) -> dict[str, Any]:
    """What goes with the run's end to its record for the memory of the thread's later
    runs (bridge.memory), not in the event: what the tools returned, summarised, and
    the answer's tokens as the model provider counted them (its last call, complete:
    the answer's; none from the built-in rules or a cut answer: estimated then)."""
    extra: dict[str, Any] = {}
    note = tool_note((o.call.tool, o.call.arguments, o.ok, o.result)
                     for o in transcript.outcomes)
    if note:
        extra["tools_note"] = note
    last = ctx.model_calls[-1] if ctx.model_calls else None
    if last is not None and last.status == "ok" and last.completion_tokens > 0:
        extra["answer_tokens"] = last.completion_tokens
    return extra


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
