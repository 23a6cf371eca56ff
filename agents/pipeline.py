"""The built-in planner: deterministic rules, no network and no model.

It is not a language model. It recognises a few kinds of request by their words
and runs the original platform's pipeline for them; every event names the
stage (agent) that produced it:

- **spend** ("spend", "cost", "usage", "tokens", "model", "bill"...): ``triage``
  notes what is needed → ``data`` calls ``query_usage`` for the days the request
  names ("last N days", "week" 7, "month" 30, "today" 1; else 7) → when the
  request asks how to cut, save, reduce or optimise, ``optimization`` calls
  ``estimate_savings`` on that data → ``report`` writes the answer: each model
  with its requests and cost to the cent, then each saving;
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

_SPEND = re.compile(r"\b(spen[dt]|spending|cost|costs|usage|tokens?|bill|models?|budget|"
                    r"expensive|cheaper|price)\b", re.IGNORECASE)
_CUT = re.compile(r"\b(cut|save|saving|savings|reduce|lower|optimi[sz]e|cheaper|recommend)",
                  re.IGNORECASE)
_TIME = re.compile(r"\b(what time|the time|date|today|clock|what day)\b", re.IGNORECASE)
_SEARCH = re.compile(r"\b(search|find|look up|mention(?:ed)?)\b", re.IGNORECASE)
_QUOTED = re.compile(r"[\"“']([^\"”']{1,200})[\"”']")
_AFTER = re.compile(r"\b(?:for|about)\s+(.{1,200}?)[?.!]*$", re.IGNORECASE)
_DAYS = re.compile(r"\b(?:last|past)\s+(\d{1,3})\s+days?\b", re.IGNORECASE)
_ZONE = re.compile(r"\b([A-Z][a-z]+/[A-Z][A-Za-z_]+)\b")
_HELP = ("I am the built-in planner (rules, not a language model). I can report your AI "
         "spend per model and how to cut it, evaluate arithmetic (what is 17 * 23?), tell "
         "the time, and search your messages (search my messages for \"invoice\").")


def classify(text: str) -> Intent:
    if _SEARCH.search(text) and (_QUOTED.search(text) or _AFTER.search(text)):
        return "search"
    if _SPEND.search(text):
        return "spend"
    if find_expression(text) is not None:
        return "arithmetic"
    if _TIME.search(text):
        return "time"
    return "help"


def days_asked(text: str) -> int:
    match = _DAYS.search(text)
    if match:
        return max(1, min(int(match.group(1)), 365))
    lowered = text.lower()
    if "month" in lowered:
        return 30
    if "today" in lowered:
        return 1
    return 7


class PipelinePlanner:
    """``supervisor`` runs the whole pipeline; ``triage``, ``data`` and
    ``optimization`` stop after their own stage and answer with what they found."""

    def __init__(self, mode: Mode = "supervisor") -> None:
        self._mode = mode

    async def next_step(self, transcript: Transcript) -> Decision:
        intent = classify(transcript.input)
        if intent == "spend":
            return self._spend(transcript)
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

    def _spend(self, transcript: Transcript) -> Decision:
        text = transcript.input
        days = days_asked(text)
        wants_cuts = self._mode == "optimization" or (
            self._mode == "supervisor" and bool(_CUT.search(text)))
        outcomes = {o.call.tool: o for o in transcript.outcomes}
        if not transcript.thoughts:
            plan = "usage data, then savings, then a report" if wants_cuts else \
                "usage data, then a report"
            return Think(f"A question about AI spend over the last {days} days: it needs "
                         f"{plan}.", agent="triage")
        if self._mode == "triage":
            return Final(f"Classified as spend over {days} days.", agent="triage")
        data = outcomes.get("query_usage")
        if data is None:
            return ToolCall("query_usage", {"days": days, "group_by": "model"},
                            thought=f"Reading your usage of the last {days} days, per model.",
                            agent="data")
        if not data.ok:
            return _report(f"I could not read your usage data: "
                           f"{data.result.get('message', 'error')}.")
        items = data.result["items"]
        if wants_cuts and items and "estimate_savings" not in outcomes:
            return ToolCall("estimate_savings", {"items": [_model_usage(i) for i in items]},
                            thought="Looking for requests a smaller model could serve: "
                                    f"completions under {SHORT_UNDER_TOKENS} tokens on large "
                                    "models.", agent="optimization")
        savings = outcomes.get("estimate_savings")
        return _report(spend_report(days, items, savings.result if savings and savings.ok
                                    else None, wants_cuts))


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
                 wants_cuts: bool) -> str:
    if not items:
        return f"No AI usage was recorded in the last {days} days."
    total = sum((Decimal(str(i["cost_usd"])) for i in items), Decimal(0))
    requests = sum(int(i["requests"]) for i in items)
    lines = [f"Over the last {days} days you spent {cents(total)} on {requests:,} requests "
             f"across {len(items)} models:"]
    lines += [f"- {i['key']}: {int(i['requests']):,} requests, {cents(i['cost_usd'])}"
              for i in items]
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
