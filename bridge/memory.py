"""A thread's memory: the earlier turns a run is given, within a token budget.

The backend builds it when it appends a run to the queue (the thread's earlier
answered runs, newest kept first, the oldest dropped once the budget is spent)
and the worker hands it to the planner. Only the run's own thread is read. A turn
carries what its tools returned, summarised (:func:`tool_note`: one line a call,
each cut to :data:`NOTE_CALL_CHARS`, all to :data:`NOTE_CHARS`), written by the
worker with the run's end and kept with the run's record.

An answer's tokens are the model provider's own count where it gave one (the
usage of the call that streamed the answer, kept with the run); everything else
is estimated, not counted: a quarter of the text's UTF-8 bytes, rounded up (BPE
tokenizers of the common models average 3.5 to 4.5 bytes a token on English; a
byte-level count never underestimates non-Latin text by much, where a character
count would). Nothing is downloaded to count them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["NOTE_CALL_CHARS", "NOTE_CHARS", "Turn", "decode_memory", "encode_memory",
           "estimate_tokens", "tool_note", "within_budget"]

#: the most of one call's line in a turn's tool note, and of the whole note
NOTE_CALL_CHARS = 300
NOTE_CHARS = 1500
_CUT = "…"


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier run of the thread: what was asked, what its tools returned
    (summarised; empty: none called) and what was answered."""

    input: str
    answer: str
    tools: str = ""
    #: the answer's tokens as the model provider counted them (0: not known, estimated)
    answer_tokens: int = 0

    def tokens(self) -> int:
        return (estimate_tokens(self.input) + (self.answer_tokens or estimate_tokens(self.answer))
                + estimate_tokens(self.tools))


def tool_note(calls: Iterable[tuple[str, Any, bool, Any]]) -> str:
    """What a run's tool calls (tool, arguments, ok, result or error) returned, a
    line each: ``calculator {"expression":"6 * 7"} -> {"value":42}``; each line
    and the whole bounded (an answer already states what mattered)."""
    lines: list[str] = []
    left = NOTE_CHARS
    for tool, arguments, ok, result in calls:
        outcome = _compact(result) if ok else "failed: " + _compact(result)
        line = _cut(f"{tool} {_compact(arguments)} -> {outcome}", NOTE_CALL_CHARS)
        if len(line) + 1 > left:
            lines.append(_CUT)
            break
        lines.append(line)
        left -= len(line) + 1
    return "\n".join(lines)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - len(_CUT)] + _CUT


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text.encode()) / 4)


def within_budget(newest_first: Iterable[Turn], budget_tokens: int) -> list[Turn]:
    """The newest turns whose tokens fit ``budget_tokens`` together, oldest first;
    a turn that does not fit ends the memory (nothing older is kept past a gap)."""
    kept: list[Turn] = []
    left = budget_tokens
    for turn in newest_first:
        cost = turn.tokens()
        if cost > left:
            break
        kept.append(turn)
        left -= cost
    kept.reverse()
    return kept


def encode_memory(turns: list[Turn]) -> str:
    return json.dumps([{k: v for k, v in asdict(turn).items() if v or k in ("input", "answer")}
                       for turn in turns], ensure_ascii=False,
                      separators=(",", ":"))


def decode_memory(text: str) -> tuple[Turn, ...]:
    """The turns of a queue entry's memory; anything malformed is no memory."""
    try:
        items = json.loads(text)
        return tuple(Turn(input=str(item["input"]), answer=str(item["answer"]),
                          tools=str(item.get("tools", "")),
                          answer_tokens=int(item.get("answer_tokens", 0))) for item in items)
    except (ValueError, TypeError, KeyError, AttributeError):
        return ()
