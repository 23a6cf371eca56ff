"""A run paused on a tool approval, as data: what a worker stores and another resumes.

Pure: :func:`encode` and :func:`decode` turn a :class:`Paused` into JSON and back
(the transcript so far, the call waiting, the step it was decided at, and how
long the run had run), so nothing of the run stays in the worker that paused it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agents.planner import Think, ToolCall, ToolOutcome, Transcript
from bridge.memory import Turn

__all__ = ["Paused", "decode", "encode"]


@dataclass(frozen=True)
class Paused:
    call_id: str
    call: ToolCall
    step: int  # the step that decided the call; the next one follows the answer
    transcript: Transcript
    tool_calls: int
    elapsed_s: float  # the run's time before the pause (its deadline counts only that)
    expires_at: str


def encode(paused: Paused) -> str:
    transcript = paused.transcript
    return json.dumps({
        "call_id": paused.call_id, "call": _call(paused.call), "step": paused.step,
        "tool_calls": paused.tool_calls, "elapsed_s": paused.elapsed_s,
        "expires_at": paused.expires_at,
        "input": transcript.input,
        "outcomes": [{"call": _call(o.call), "ok": o.ok, "result": o.result}
                     for o in transcript.outcomes],
        "thoughts": [{"thought": t.thought, "agent": t.agent} for t in transcript.thoughts],
        "history": [{"input": t.input, "answer": t.answer} for t in transcript.history],
    }, ensure_ascii=False, default=str)


def decode(text: str) -> Paused:
    data = json.loads(text)
    transcript = Transcript(
        input=data["input"],
        outcomes=[ToolOutcome(call=_tool_call(o["call"]), ok=o["ok"], result=o["result"])
                  for o in data["outcomes"]],
        thoughts=[Think(thought=t["thought"], agent=t["agent"]) for t in data["thoughts"]],
        history=tuple(Turn(input=t["input"], answer=t["answer"]) for t in data["history"]))
    return Paused(call_id=data["call_id"], call=_tool_call(data["call"]), step=data["step"],
                  transcript=transcript, tool_calls=data["tool_calls"],
                  elapsed_s=data["elapsed_s"], expires_at=data["expires_at"])


def _call(call: ToolCall) -> dict[str, Any]:
    return {"tool": call.tool, "arguments": call.arguments, "thought": call.thought,
            "agent": call.agent}


def _tool_call(data: dict[str, Any]) -> ToolCall:
    return ToolCall(tool=data["tool"], arguments=data["arguments"], thought=data["thought"],
                    agent=data["agent"])
