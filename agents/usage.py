"""The agents' own model usage: what the platform's agents spend calling a model.

A planner that calls a model appends one :class:`ModelCall` per call to its run's
transcript (whose list is the run's own ``RunContext.model_calls``); when the run
is done, the worker turns them into rows of the analytics ``usage`` table
(:func:`usage_rows`), recorded for the run's user and marked ``source = 'agents'``
(the rows users post are ``'user'``), so a user's spend covers what the agents
cost them and shows it apart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from agents.pricing import PRICES, Price, cost_at
from bridge.ingest import AGENTS_SOURCE

__all__ = ["ModelCall", "ModelPrices", "usage_rows"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelCall:
    """One call to a model: its tokens as the server reported them (0 when it sent
    none), from the request to the end of its stream; ``error`` when the call
    failed or its stream was closed before its end (tokens: what was known)."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    status: Literal["ok", "error"]
    ts: str  # when the request was sent (bridge.events.utc_timestamp)


class ModelPrices:
    """The cost of a call: the worker's own price of a model (a self-hosted one, or
    a contract price), else the list price (``agents.pricing``), else 0, logged
    once per model. Shared by the worker's runs; it holds no user data."""

    def __init__(self, own: dict[str, Price] | None = None) -> None:
        self._own = dict(own or {})
        self._unpriced: set[str] = set()

    def price(self, model: str) -> Price | None:
        return self._own.get(model) or PRICES.get(model)

    def cost(self, call: ModelCall) -> Decimal:
        price = self.price(call.model)
        if price is None:
            if call.model not in self._unpriced:
                self._unpriced.add(call.model)
                log.warning("no price for model %r: its calls are recorded at $0 (set "
                            "WORKER_OPENAI_PRICE_PER_MILLION)", call.model)
            return Decimal(0)
        return cost_at(price, call.prompt_tokens, call.completion_tokens)


def usage_rows(user_id: str, calls: Iterable[ModelCall], prices: ModelPrices
               ) -> list[dict[str, Any]]:
    """The ``usage`` rows of a run's model calls, for its user, marked as the agents'."""
    return [{"user_id": user_id, "ts": call.ts, "model": call.model,
             "prompt_tokens": call.prompt_tokens, "completion_tokens": call.completion_tokens,
             "cost_usd": str(prices.cost(call)), "latency_ms": call.latency_ms,
             "status": call.status, "source": AGENTS_SOURCE} for call in calls]
