"""Planners decide a run's next step; the runtime carries it out.

The types of a decision (:class:`ToolCall`, :class:`Think`, :class:`Final`), the
transcript a planner decides from, and the diagnostic :class:`TickerPlanner`.
The built-in rules live in ``agents.pipeline``; an OpenAI-compatible model in
``agents.openai``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.errors import PlannerError
from agents.usage import ModelCall
from bridge.memory import Turn

__all__ = ["MAX_TICKS", "MAX_TICK_BYTES", "MAX_TICK_INTERVAL_MS", "Decision", "Final",
           "Planner", "Think", "TickerPlanner", "ToolCall", "ToolOutcome", "Transcript"]


@dataclass(frozen=True)
class ToolCall:
    """Call ``tool``. ``agent``: the pipeline stage that decided it (events carry that
    name; None: the run's agent)."""

    tool: str
    arguments: dict[str, Any]
    thought: str
    agent: str | None = None


@dataclass(frozen=True)
class Think:
    """A step that only reasons aloud: one ``agent_thinking`` event, then the next step."""

    thought: str
    agent: str | None = None


@dataclass(frozen=True)
class Final:
    """The answer. ``deltas`` (joined, the answer) are streamed as ``partial_result``
    events first, ``delta_interval_s`` apart; any iterable, consumed once as the
    deltas are emitted (a generator: built one at a time, never all at once). A
    provider that streams sets ``stream`` instead: each piece is emitted as it
    arrives (those that arrive during an emit, together in the next one), and the
    answer is their concatenation (``answer`` is then ignored)."""

    answer: str
    thought: str = ""
    deltas: Iterable[str] = ()
    delta_interval_s: float = 0.0
    agent: str | None = None
    stream: AsyncIterator[str] | None = None


Decision = ToolCall | Think | Final


@dataclass(frozen=True)
class ToolOutcome:
    call: ToolCall
    ok: bool
    result: Any


@dataclass
class Transcript:
    """What happened in the run so far: its input, the tool calls' outcomes and the
    reasoning-only steps (in order), and the thread's earlier turns (its memory,
    oldest first). A planner that calls a model appends each call to
    ``model_calls`` (the run's own list: the runtime passes its context's), also
    when the call ends after the step returned (a streamed answer)."""

    input: str
    outcomes: list[ToolOutcome] = field(default_factory=list)
    thoughts: list[Think] = field(default_factory=list)
    history: tuple[Turn, ...] = ()
    model_calls: list[ModelCall] = field(default_factory=list)


class Planner(Protocol):
    """Decides a run's next step from what happened so far. A planner is shared by
    every run of its agent: it keeps no state of its own between calls."""

    async def next_step(self, transcript: Transcript) -> Decision: ...


_EXPRESSION = re.compile(r"[-+(]*\s*\d[\d.\s]*(?:[-+*/%^x\u00d7]+\s*[-+(]*\s*\d[\d.\s]*[)]*\s*)+")


def find_expression(text: str) -> str | None:
    match = _EXPRESSION.search(text)
    if match is None:
        return None
    return re.sub(r"\s+", " ", match.group(0).replace("\u00d7", "*").replace("x", "*")).strip()


_TICKS = re.compile(r"ticks?\s+(\d+)(?:\s+every\s+(\d+(?:\.\d+)?)\s*ms)?"
                    r"(?:\s+of\s+(\d+)\s*bytes)?", re.IGNORECASE)

#: the ticker's bounds: a request beyond one fails the run, naming it
MAX_TICKS = 20_000
MAX_TICK_INTERVAL_MS = 10_000
MAX_TICK_BYTES = 16 * 1024


class TickerPlanner:
    """A diagnostic agent for delivery and load tests: "ticks 500 every 5ms of 200 bytes"
    streams 500 ``partial_result`` deltas of 200 bytes, 5 ms apart (at most
    :data:`MAX_TICKS` ticks, 1 to :data:`MAX_TICK_INTERVAL_MS` ms apart, of at most
    :data:`MAX_TICK_BYTES` bytes; beyond, the run fails). The deltas are built one at
    a time as they are sent. The answer says how many ticks were streamed."""

    async def next_step(self, transcript: Transcript) -> Decision:
        match = _TICKS.search(transcript.input)
        count = int(match.group(1)) if match else 10
        interval_ms = float(match.group(2)) if match and match.group(2) else None
        size = int(match.group(3)) if match and match.group(3) else 0
        if count > MAX_TICKS:
            raise PlannerError(f"ticker: at most {MAX_TICKS} ticks (asked for {count})")
        if interval_ms is not None and not 1 <= interval_ms <= MAX_TICK_INTERVAL_MS:
            raise PlannerError(f"ticker: ticks are 1 to {MAX_TICK_INTERVAL_MS} ms apart "
                               f"(asked for {interval_ms:g} ms)")
        if size > MAX_TICK_BYTES:
            raise PlannerError(f"ticker: ticks of at most {MAX_TICK_BYTES} bytes "
                               f"(asked for {size})")
        interval = interval_ms or 0.0
        return Final(f"streamed {count} ticks", deltas=_ticks(count, size),
                     thought=f"Streaming {count} ticks, {interval} ms apart.",
                     delta_interval_s=interval / 1000)


def _ticks(count: int, size: int) -> Iterator[str]:
    for n in range(1, count + 1):
        yield f"tick {n} ".ljust(size, ".")
