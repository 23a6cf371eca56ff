"""A thread's memory: the earlier turns a run is given, within a token budget.

The backend builds it when it appends a run to the queue (the thread's earlier
answered runs, newest kept first, the oldest dropped once the budget is spent)
and the worker hands it to the planner. Only the run's own thread is read.

Tokens are estimated, not counted: a quarter of the text's UTF-8 bytes, rounded
up (BPE tokenizers of the common models average 3.5 to 4.5 bytes a token on
English; a byte-level count never underestimates non-Latin text by much, where a
character count would). Nothing is downloaded to count them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

__all__ = ["Turn", "decode_memory", "encode_memory", "estimate_tokens", "within_budget"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier run of the thread: what was asked and what was answered."""

    input: str
    answer: str

    def tokens(self) -> int:
        return estimate_tokens(self.input) + estimate_tokens(self.answer)


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
    return json.dumps([asdict(turn) for turn in turns], ensure_ascii=False,
                      separators=(",", ":"))


def decode_memory(text: str) -> tuple[Turn, ...]:
    """The turns of a queue entry's memory; anything malformed is no memory."""
    try:
        items = json.loads(text)
        return tuple(Turn(input=str(item["input"]), answer=str(item["answer"]))
                     for item in items)
    except (ValueError, TypeError, KeyError):
        return ()
