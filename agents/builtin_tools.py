"""The built-in agents' tools besides the calculator.

- ``query_usage``: the caller's AI usage aggregates (ClickHouse, through the
  backend's internal API, for the run's own user only);
- ``estimate_savings``: what moving short requests to a smaller model would save,
  computed from ``query_usage``'s figures and the price table (``agents.pricing``);
- ``clock``: the current time in a time zone;
- ``thread_search``: the caller's own messages containing a text (Postgres).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field

from agents.backend_client import BackendClient
from agents.context import RunContext
from agents.errors import ToolError
from agents.pricing import CHEAPER, cost_usd
from agents.tools import Tool

__all__ = ["CLOCK", "ESTIMATE_SAVINGS", "QUERY_USAGE", "SHORT_UNDER_TOKENS", "THREAD_SEARCH"]

#: A completion shorter than this counts as a short request: a smaller model's job.
SHORT_UNDER_TOKENS = 300


def _backend(ctx: RunContext) -> BackendClient:
    if ctx.services.backend is None:
        raise ToolError("not_configured", "this worker has no backend to ask")
    return ctx.services.backend


class QueryUsageArgs(BaseModel):
    days: int = Field(default=7, ge=1, le=365, description="How many days")
    offset_days: int = Field(default=0, ge=0, le=365,
                             description="Ending this many days ago (0: ending now)")
    group_by: Literal["model", "day"] = Field(default="model", description="Aggregate per")


async def _query_usage(ctx: RunContext, args: QueryUsageArgs) -> dict[str, Any]:
    end = datetime.now(UTC) - timedelta(days=args.offset_days)
    start = end - timedelta(days=args.days)
    answer = await _backend(ctx).usage(
        ctx.user_id, start=start.isoformat(), end=end.isoformat(), group_by=args.group_by,
        short_tokens=SHORT_UNDER_TOKENS if args.group_by == "model" else None)
    return {"days": args.days, "offset_days": args.offset_days, "group_by": args.group_by,
            "from": answer["from"],
            "to": answer["to"], "short_under_tokens": SHORT_UNDER_TOKENS,
            "items": answer["items"]}


QUERY_USAGE = Tool("query_usage", "Your AI usage (requests, tokens, cost, latency; agents_*: "
                   "the part of this platform's own agents) per model or per day over N days, "
                   "ending now or offset_days ago.", QueryUsageArgs,
                   _query_usage)


#: the largest count or amount a usage figure may carry into estimate_savings
_MAX_FIGURE = 10**15


class ModelUsage(BaseModel):
    key: str = Field(max_length=200, description="The model")
    requests: int = Field(ge=0, le=_MAX_FIGURE)
    cost_usd: float = Field(ge=0, le=_MAX_FIGURE)
    short_requests: int = Field(ge=0, le=_MAX_FIGURE)
    short_prompt_tokens: int = Field(ge=0, le=_MAX_FIGURE)
    short_completion_tokens: int = Field(ge=0, le=_MAX_FIGURE)
    short_cost_usd: float = Field(ge=0, le=_MAX_FIGURE)


class EstimateSavingsArgs(BaseModel):
    items: list[ModelUsage] = Field(max_length=100,
                                    description="query_usage's items, grouped by model")


async def _estimate_savings(_: RunContext, args: EstimateSavingsArgs) -> dict[str, Any]:
    recommendations: list[dict[str, Any]] = []
    for item in args.items:
        smaller = CHEAPER.get(item.key)
        if smaller is None or item.short_requests == 0:
            continue
        current = Decimal(str(item.short_cost_usd))
        projected = cost_usd(smaller, item.short_prompt_tokens, item.short_completion_tokens)
        if projected >= current:
            continue
        recommendations.append({
            "from_model": item.key, "to_model": smaller, "requests": item.short_requests,
            "current_cost_usd": float(current), "projected_cost_usd": float(projected),
            "saving_usd": float(current - projected)})
    recommendations.sort(key=lambda r: float(r["saving_usd"]), reverse=True)
    total = sum((Decimal(str(r["saving_usd"])) for r in recommendations), Decimal(0))
    spend = sum((Decimal(str(i.cost_usd)) for i in args.items), Decimal(0))
    return {"recommendations": recommendations, "total_saving_usd": float(total),
            "total_cost_usd": float(spend)}


ESTIMATE_SAVINGS = Tool(
    "estimate_savings", "What moving short requests from large models to smaller ones of the "
    "same family would save, at list prices.", EstimateSavingsArgs, _estimate_savings)


class ClockArgs(BaseModel):
    timezone: str = Field(default="UTC", max_length=64, description="An IANA time zone")


async def _clock(_: RunContext, args: ClockArgs) -> dict[str, Any]:
    try:
        now = datetime.now(ZoneInfo(args.timezone))
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError("unknown_timezone", f"no time zone named {args.timezone!r}") from None
    return {"timezone": args.timezone, "iso": now.isoformat(timespec="seconds"),
            "weekday": now.strftime("%A")}


CLOCK = Tool("clock", "The current date and time in a time zone.", ClockArgs, _clock)


class ThreadSearchArgs(BaseModel):
    text: str = Field(min_length=1, max_length=200, description="Text to look for")
    limit: int = Field(default=5, ge=1, le=20)


async def _thread_search(ctx: RunContext, args: ThreadSearchArgs) -> dict[str, Any]:
    answer = await _backend(ctx).search_messages(ctx.user_id, args.text, args.limit)
    return {"text": args.text, "matches": [
        {"thread_id": m["thread_id"], "role": m["role"], "content": m["content"][:300],
         "created_at": m["created_at"]} for m in answer["items"]]}


THREAD_SEARCH = Tool("thread_search", "Your own messages, in all your threads, containing a "
                     "text.", ThreadSearchArgs, _thread_search)
