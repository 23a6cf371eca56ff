"""A user's AI usage records: deterministic, realistic, and their true sums.

``generate`` writes per-request rows (model, prompt and completion tokens, cost
at list price, latency, status, time) for one user over N days; the same user key,
days and end give the same rows. ``totals`` is the independent arithmetic a test
or a scenario checks an answer against.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from agents.pricing import PRICES, cost_usd

__all__ = ["generate", "totals"]

# per model: (weight, median prompt tokens, median completion tokens, base latency ms)
_PROFILES: dict[str, tuple[float, int, int, int]] = {
    "gpt-4o": (0.30, 900, 350, 900),
    "gpt-4o-mini": (0.30, 600, 250, 350),
    "claude-sonnet-4": (0.20, 1200, 450, 1100),
    "gpt-4.1": (0.10, 1000, 300, 950),
    "claude-haiku-3.5": (0.10, 500, 200, 400),
}
assert set(_PROFILES) <= set(PRICES)


def generate(user_key: str, days: int, *, end: datetime | None = None,
             per_day: int = 40) -> list[dict[str, Any]]:
    """About ``per_day`` requests a day over the ``days`` days before ``end`` (the
    newest at least a minute before it), in time order."""
    end = (end or datetime.now(UTC)).replace(microsecond=0)
    rng = random.Random(f"{user_key}/{days}/{per_day}")
    models = list(_PROFILES)
    weights = [_PROFILES[m][0] * rng.uniform(0.5, 1.5) for m in models]  # each user differs
    span = days * 86_400 - 120
    records: list[dict[str, Any]] = []
    for _ in range(days * per_day):
        model = rng.choices(models, weights)[0]
        _, prompt_median, completion_median, latency_base = _PROFILES[model]
        prompt = max(1, int(rng.lognormvariate(0, 0.6) * prompt_median))
        completion = max(1, int(rng.lognormvariate(0, 0.9) * completion_median))
        status = rng.choices(["ok", "error", "timeout"], [0.96, 0.03, 0.01])[0]
        records.append({
            "ts": (end - timedelta(seconds=60 + rng.uniform(0, span))).isoformat(),
            "model": model, "prompt_tokens": prompt, "completion_tokens": completion,
            "cost_usd": str(cost_usd(model, prompt, completion)),
            "latency_ms": int(latency_base + completion * rng.uniform(8, 14)),
            "status": status})
    records.sort(key=lambda r: str(r["ts"]))
    return records


def totals(records: list[dict[str, Any]], *, since: datetime | None = None
           ) -> dict[str, tuple[int, Decimal]]:
    """Per model: (requests, exact cost) of the records at or after ``since``."""
    sums: dict[str, tuple[int, Decimal]] = defaultdict(lambda: (0, Decimal(0)))
    for record in records:
        if since is not None and datetime.fromisoformat(record["ts"]) < since:
            continue
        count, cost = sums[record["model"]]
        sums[record["model"]] = (count + 1, cost + Decimal(str(record["cost_usd"])))
    return dict(sums)
