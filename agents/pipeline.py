"""The built-in planner: deterministic rules, no network and no model.

It is not a language model. It recognises a few kinds of request by their words
and runs the original platform's pipeline for them; every event names the
stage (agent) that produced it:

- **spend** ("spend", "cost", "usage", "tokens", "model", "bill"...): ``triage``
  notes what is needed → ``data`` calls ``query_usage`` for the days the request
  names ("last N days", "week" 7, "month" 30, "today" 1; else 7) → when the
  request asks how to cut, save, reduce or optimise, ``optimization`` calls
  ``estimate_savings`` on that data → ``report`` writes the answer: each model
  with its requests and cost to the cent, the part this platform's own agents
  spent calling a model (when there is one), then each saving;
- **arithmetic** (an expression): ``calculator``, answer ``<expression> = <value>``;
- **time** ("time", "date", "today", "clock"): ``clock`` (a zone named like
  ``Europe/Paris`` in the request, else UTC);
- **search** ("search", "find", "mention" ... followed by a quoted text or the
  text after "for"/"about"): ``thread_search`` in the caller's own messages;
- anything else: what it can do.

The planner keeps nothing between calls: the stage follows from the transcript.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal

from agents.builtin_tools import SHORT_UNDER_TOKENS
from agents.followups import SpendQuery, is_spend, resolve_spend
from agents.planner import (
    Decision,
    Final,
    Think,
    ToolCall,
    ToolOutcome,
    Transcript,
    find_expression,
)
from agents.pricing import cents

__all__ = ["Intent", "PipelinePlanner", "classify"]

Intent = Literal["spend", "arithmetic", "time", "search", "help"]
Mode = Literal["supervisor", "triage", "data", "optimization"]

_TIME = re.compile(r"\b(what time|the time|date|today|clock|what day)\b", re.IGNORECASE)
_SEARCH = re.compile(r"\b(search|find|look up|mention(?:ed)?)\b", re.IGNORECASE)
_QUOTED = re.compile(r"[\"“']([^\"”']{1,200})[\"”']")
_AFTER = re.compile(r"\b(?:for|about)\s+(.{1,200}?)[?.!]*$", re.IGNORECASE)
_ZONE = re.compile(r"\b([A-Z][a-z]+/[A-Z][A-Za-z_]+)\b")
_HELP = ("I am the built-in planner (rules, not a language model). I can report your AI "
         "spend per model and how to cut it, evaluate arithmetic (what is 17 * 23?), tell "
         "the time, and search your messages (search my messages for \"invoice\").")


def classify(text: str) -> Intent:
    if _SEARCH.search(text) and (_QUOTED.search(text) or _AFTER.search(text)):
        return "search"
    if is_spend(text):
        return "spend"
    if find_expression(text) is not None:
        return "arithmetic"
    if _TIME.search(text):
        return "time"
    return "help"


class PipelinePlanner:
    """``supervisor`` runs the whole pipeline; ``triage``, ``data`` and
    ``optimization`` stop after their own stage and answer with what they found."""

    def __init__(self, mode: Mode = "supervisor") -> None:
        self._mode = mode

    async def next_step(self, transcript: Transcript) -> Decision:
        intent = classify(transcript.input)
        query = None if intent == "search" else resolve_spend(
            (turn.input for turn in transcript.history), transcript.input)
        if query is not None:  # a spend question, or a follow-up of the thread's last one
            return self._spend(transcript, query)
        if intent == "spend":
            intent = "help"
        if self._mode == "triage":
            return Final(f"Classified as {intent}.", agent="triage")
        if not transcript.outcomes:
            return self._first_tool(intent, transcript.input)
        return Final(_answer(transcript.outcomes[-1]))

    def _first_tool(self, intent: Intent, text: str) -> Decision:
        if intent == "arithmetic":
            expression = find_expression(text)
            return ToolCall("calculator", {"expression": expression},
                            thought=f"The request is arithmetic: {expression}. "
                                    "Using the calculator.")
        if intent == "time":
            zone = _ZONE.search(text)
            return ToolCall("clock", {"timezone": zone.group(1) if zone else "UTC"},
                            thought="The request asks for the time: reading the clock.")
        if intent == "search":
            quoted = _QUOTED.search(text) or _AFTER.search(text)
            needle = quoted.group(1).strip() if quoted else text
            return ToolCall("thread_search", {"text": needle},
                            thought=f"Searching your messages for {needle!r}.")
        return Final(_HELP, thought="Nothing in the request that my rules cover.")

    def _spend(self, transcript: Transcript, query: SpendQuery) -> Decision:
        wants_cuts = self._mode == "optimization" or (
            self._mode == "supervisor" and query.wants_cuts)
        period = _period(query.days, query.offset_days)
        if not transcript.thoughts:
            plan = "usage data, then savings, then a report" if wants_cuts else \
                "usage data, then a report"
            scope = f" on {query.model}" if query.model else ""
            also = f", compared with the {query.days} days before" if query.compare else ""
            return Think(f"A question about AI spend{scope} over {period}{also}: it needs "
                         f"{plan}.", agent="triage")
        if self._mode == "triage":
            return Final(f"Classified as spend over {period}.", agent="triage")
        reads = [o for o in transcript.outcomes if o.call.tool == "query_usage"]
        offsets = [query.offset_days] + ([query.offset_days + query.days] if query.compare
                                         else [])
        if len(reads) < len(offsets):
            offset = offsets[len(reads)]
            return ToolCall("query_usage", {"days": query.days, "offset_days": offset,
                                            "group_by": "model"},
                            thought=f"Reading your usage of {_period(query.days, offset)}, "
                                    "per model.", agent="data")
        failed = next((read for read in reads if not read.ok), None)
        if failed is not None:
            return _report(f"I could not read your usage data: "
                           f"{failed.result.get('message', 'error')}.")
        items = [_only(read.result["items"], query.model) for read in reads]
        if query.compare:
            return _report(compare_report(query, items[0], items[1]))
        savings = next((o for o in transcript.outcomes if o.call.tool == "estimate_savings"),
                       None)
        if wants_cuts and items[0] and savings is None:
            return ToolCall("estimate_savings", {"items": [_model_usage(i) for i in items[0]]},
                            thought="Looking for requests a smaller model could serve: "
                                    f"completions under {SHORT_UNDER_TOKENS} tokens on large "
                                    "models.", agent="optimization")
        return _report(spend_report(query.days, items[0], savings.result if savings and savings.ok
                                    else None, wants_cuts, offset_days=query.offset_days,
                                    model=query.model))


def _period(days: int, offset_days: int) -> str:
    if offset_days == 0:
        return f"the last {days} days"
    return f"the {days} days ending {offset_days} days ago"


def _only(items: list[dict[str, Any]], model: str | None) -> list[dict[str, Any]]:
    return [i for i in items if model is None or i["key"] == model]


def compare_report(query: SpendQuery, now: list[dict[str, Any]],
                   before: list[dict[str, Any]]) -> str:
    """Two periods of the same length side by side, to the cent."""
    scope = f" on {query.model}" if query.model else ""
    first = _period(query.days, query.offset_days)
    second = _period(query.days, query.offset_days + query.days)
    spent_now, spent_before = _total(now), _total(before)
    change = spent_now - spent_before
    direction = "more" if change > 0 else "less" if change < 0 else "the same"
    lines = [f"Over {first} you spent {cents(spent_now)}{scope} on "
             f"{sum(int(i['requests']) for i in now):,} requests; over {second}, "
             f"{cents(spent_before)} on {sum(int(i['requests']) for i in before):,} requests.",
             f"That is {cents(abs(change))} {direction}" if change else
             "That is the same amount."]
    if change and spent_before:
        lines[-1] += f" ({abs(change) / spent_before * 100:.0f}%)."
    elif change:
        lines[-1] += "."
    if _agents_requests(now) or _agents_requests(before):
        lines.append(f"Of these, this platform's agents spent {_agents_part(now)} and "
                     f"{_agents_part(before)}.")
    return "\n".join(lines)


def _agents_requests(items: list[dict[str, Any]]) -> int:
    return sum(int(i.get("agents_requests", 0)) for i in items)


def _agents_part(items: list[dict[str, Any]]) -> str:
    """What the platform's own agents spent of ``items``: ``$0.42 (3 model calls)``."""
    spent = sum((Decimal(str(i.get("agents_cost_usd", 0))) for i in items), Decimal(0))
    calls = _agents_requests(items)
    return f"{cents(spent)} ({calls:,} model call{'' if calls == 1 else 's'})"


def _total(items: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(str(i["cost_usd"])) for i in items), Decimal(0))


def _model_usage(item: dict[str, Any]) -> dict[str, Any]:
    keys = ("key", "requests", "cost_usd", "short_requests", "short_prompt_tokens",
            "short_completion_tokens", "short_cost_usd")
    return {k: item.get(k, 0) for k in keys}


def _report(text: str) -> Final:
    # streamed a few words at a time, as a model would
    words = text.split(" ")
    deltas = tuple(" ".join(words[i:i + 4]) + (" " if i + 4 < len(words) else "")
                   for i in range(0, len(words), 4))
    return Final(text, thought="Writing the report.", deltas=deltas, agent="report")


def spend_report(days: int, items: list[dict[str, Any]], savings: dict[str, Any] | None,
                 wants_cuts: bool, *, offset_days: int = 0, model: str | None = None) -> str:
    period = _period(days, offset_days)
    scope = f" on {model}" if model else ""
    if not items:
        return f"No AI usage{scope} was recorded in {period}."
    total = sum((Decimal(str(i["cost_usd"])) for i in items), Decimal(0))
    requests = sum(int(i["requests"]) for i in items)
    models = f"on {model}" if model else f"across {len(items)} models"
    lines = [f"Over {period} you spent {cents(total)} on {requests:,} requests {models}:"]
    lines += [f"- {i['key']}: {int(i['requests']):,} requests, {cents(i['cost_usd'])}"
              for i in items]
    if _agents_requests(items):
        lines.append(f"Of this, this platform's agents spent {_agents_part(items)}.")
    if wants_cuts:
        recommendations = (savings or {}).get("recommendations", [])
        if not recommendations:
            lines.append("I found no requests that a smaller model could take over.")
        else:
            lines.append("To cut it:")
            for r in recommendations:
                lines.append(
                    f"- Move the {int(r['requests']):,} requests on {r['from_model']} with "
                    f"completions under {SHORT_UNDER_TOKENS} tokens to {r['to_model']}: "
                    f"{cents(r['projected_cost_usd'])} instead of "
                    f"{cents(r['current_cost_usd'])}, saving {cents(r['saving_usd'])}.")
            saved = Decimal(str(savings["total_saving_usd"])) if savings else Decimal(0)
            share = saved / total * 100 if total else Decimal(0)
            lines.append(f"Together: {cents(saved)} less over these {days} days "
                         f"({share:.0f}% of the spend).")
    return "\n".join(lines)


def _answer(last: ToolOutcome) -> str:
    tool, result = last.call.tool, last.result
    if not last.ok:
        return f"{tool} failed: {result.get('message', 'error')}"
    if tool == "calculator":
        return f"{result['expression']} = {result['value']}"
    if tool == "clock":
        return f"It is {result['iso']} ({result['weekday']}) in {result['timezone']}."
    if tool == "thread_search":
        matches = result["matches"]
        if not matches:
            return f"None of your messages mention {result['text']!r}."
        found = "\n".join(f"- ({m['role']}, {m['created_at'][:10]}) {m['content'][:120]}"
                          for m in matches)
        return f"{len(matches)} of your messages mention {result['text']!r}:\n{found}"
    return str(result)
