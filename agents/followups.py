"""Which spend question a thread's latest input asks, given its earlier inputs.

A chat's second question is often a follow-up: "and the 7 days before that?",
"only gpt-4o", "what about last month?", "compare with the week before". The
built-in planner resolves each input of the thread in order against the spend
question before it (:func:`resolve_spend`): a standalone spend question starts
afresh; a follow-up changes what it names (the period, shifted or replaced; a
model filter, added or removed; a comparison with the period before) and keeps
the rest. Rules, not a model: pure functions of the texts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from agents.pricing import PRICES

__all__ = ["SpendQuery", "is_spend", "resolve_spend"]

_SPEND = re.compile(r"\b(spen[dt]|spending|cost|costs|usage|tokens?|bill|models?|budget|"
                    r"expensive|cheaper|price)\b", re.IGNORECASE)
_CUT = re.compile(r"\b(cut|save|saving|savings|reduce|lower|optimi[sz]e|cheaper|recommend)",
                  re.IGNORECASE)
_FOLLOW = re.compile(r"^\s*(and|what about|how about|only|just|same|now|then|compare|"
                     r"versus|vs\.?|but|also)\b|\b(before that|the (week|month|day|\d+ days?) "
                     r"before|previous (week|month|\d+ days?)|all models|every model|"
                     r"without (the )?filter|compare)\b", re.IGNORECASE)
_BEFORE = re.compile(r"\b(?:the\s+)?(?:(\d{1,3})\s+days?|(week)|(month)|(day))\s+before\b|"
                     r"\bbefore that\b|\bprevious\s+(?:(\d{1,3})\s+days?|(week)|(month))\b",
                     re.IGNORECASE)
_COMPARE = re.compile(r"\b(compare|compared|versus|vs\.?)\b", re.IGNORECASE)
_DAYS = re.compile(r"\b(?:last|past)\s+(\d{1,3})\s+days?\b", re.IGNORECASE)
_PERIOD = re.compile(r"\b(?:last|past|this)\s+(week|month)\b|\btoday\b|"
                     r"\b(?:last|past)\s+\d{1,3}\s+days?\b", re.IGNORECASE)
_ALL_MODELS = re.compile(r"\b(all|every|any)\s+models?\b|\bwithout (the )?filter\b",
                         re.IGNORECASE)
#: known models, longest first (gpt-4o-mini before gpt-4o)
_MODELS = sorted(PRICES, key=len, reverse=True)
_MODEL = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(m) for m in _MODELS) + r")(?![\w.-])",
                    re.IGNORECASE)
_UNITS = {"week": 7, "month": 30, "day": 1}


@dataclass(frozen=True)
class SpendQuery:
    """A spend question's parameters: the ``days`` ending ``offset_days`` ago, one
    model or all, with the period just before it too (``compare``), and whether
    it asks how to cut."""

    days: int = 7
    offset_days: int = 0
    model: str | None = None
    compare: bool = False
    wants_cuts: bool = False


def is_spend(text: str) -> bool:
    """Whether a text asks about spend (its words, not its period)."""
    return bool(_SPEND.search(text))


def resolve_spend(earlier: Iterable[str], text: str) -> SpendQuery | None:
    """The spend question ``text`` asks after the thread's ``earlier`` inputs (oldest
    first); None when it is neither a spend question nor a follow-up of one."""
    current: SpendQuery | None = None
    for before in earlier:
        current = _step(current, before) or current  # another kind keeps the last one
    return _step(current, text)


def _step(previous: SpendQuery | None, text: str) -> SpendQuery | None:
    if previous is not None and _FOLLOW.search(text):
        return _follow(previous, text)
    if _SPEND.search(text):
        return SpendQuery(days=_days(text) or 7, model=_model(text),
                          compare=bool(_COMPARE.search(text)),
                          wants_cuts=bool(_CUT.search(text)))
    if previous is not None and (_model(text) or _PERIOD.search(text) or _CUT.search(text)):
        return _follow(previous, text)  # "gpt-4o?", "last month?", "how could I cut it?"
    return None


def _follow(previous: SpendQuery, text: str) -> SpendQuery:
    query = replace(previous, compare=bool(_COMPARE.search(text)),
                    wants_cuts=previous.wants_cuts or bool(_CUT.search(text)))
    before = _BEFORE.search(text)
    if before and not query.compare:  # the period just before the last one
        days = _before_days(before) or previous.days
        query = replace(query, days=days, offset_days=previous.offset_days + previous.days)
    elif (named := _days(text)) is not None:  # a new period, ending now
        query = replace(query, days=named, offset_days=0)
    if _ALL_MODELS.search(text):
        query = replace(query, model=None)
    elif (model := _model(text)) is not None:
        query = replace(query, model=model)
    return query


def _days(text: str) -> int | None:
    """The period a text names ("last N days", "week", "month", "today"), if any."""
    match = _DAYS.search(text)
    if match:
        return max(1, min(int(match.group(1)), 365))
    lowered = text.lower()
    if "month" in lowered:
        return 30
    if "week" in lowered:
        return 7
    if "today" in lowered:
        return 1
    return None


def _before_days(match: re.Match[str]) -> int | None:
    count = match.group(1) or match.group(5)
    if count:
        return max(1, min(int(count), 365))
    for unit in (match.group(2), match.group(3), match.group(4), match.group(6),
                 match.group(7)):
        if unit:
            return _UNITS[unit.lower()]
    return None


def _model(text: str) -> str | None:
    match = _MODEL.search(text)
    return match.group(1).lower() if match else None
