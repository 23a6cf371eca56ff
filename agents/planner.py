"""Planners decide a run's next step; the runtime carries it out.

:class:`BuiltinPlanner` is the embedded default: deterministic rules, no network
and no model. It is not a language model. Its rules:

- the input holds an arithmetic expression → call ``calculator`` with it, then
  answer ``<expression> = <value>``;
- otherwise → answer with what it can do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["BuiltinPlanner", "Final", "Planner", "ToolCall", "ToolOutcome", "Transcript"]


@dataclass(frozen=True)
class ToolCall:
    tool: str
    arguments: dict[str, Any]
    thought: str


@dataclass(frozen=True)
class Final:
    answer: str
    thought: str = ""


@dataclass(frozen=True)
class ToolOutcome:
    call: ToolCall
    ok: bool
    result: Any


@dataclass
class Transcript:
    input: str
    outcomes: list[ToolOutcome] = field(default_factory=list)


class Planner(Protocol):
    async def next_step(self, transcript: Transcript) -> ToolCall | Final: ...


_EXPRESSION = re.compile(r"[-+(]*\s*\d[\d.\s]*(?:[-+*/%^x\u00d7]+\s*[-+(]*\s*\d[\d.\s]*[)]*\s*)+")


def find_expression(text: str) -> str | None:
    match = _EXPRESSION.search(text)
    if match is None:
        return None
    return re.sub(r"\s+", " ", match.group(0).replace("\u00d7", "*").replace("x", "*")).strip()


class BuiltinPlanner:
    async def next_step(self, transcript: Transcript) -> ToolCall | Final:
        if not transcript.outcomes:
            expression = find_expression(transcript.input)
            if expression is None:
                return Final("I can evaluate arithmetic, for example: what is 17 * 23?",
                             thought="No arithmetic in the request; nothing to compute.")
            return ToolCall("calculator", {"expression": expression},
                            thought=f"The request is arithmetic: {expression}. "
                                    "Using the calculator.")
        last = transcript.outcomes[-1]
        if not last.ok:
            return Final(f"I could not compute {last.call.arguments.get('expression')}: "
                         f"{last.result.get('message', 'error')}")
        return Final(f"{last.result['expression']} = {last.result['value']}")
