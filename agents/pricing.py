"""Model prices and the savings of moving requests to a cheaper model.

List prices in dollars per million tokens (input, output), as the providers
published them; a team replaces this table with its own contract prices. The
optimization agent and the usage seeder use the same table, so a recommendation's
dollar figure is the arithmetic of these prices, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

__all__ = ["CHEAPER", "PRICES", "Price", "cents", "cost_at", "cost_usd"]


@dataclass(frozen=True)
class Price:
    input_per_million: Decimal
    output_per_million: Decimal


PRICES: dict[str, Price] = {
    "gpt-4o": Price(Decimal("2.50"), Decimal("10.00")),
    "gpt-4o-mini": Price(Decimal("0.15"), Decimal("0.60")),
    "gpt-4.1": Price(Decimal("2.00"), Decimal("8.00")),
    "gpt-4.1-mini": Price(Decimal("0.40"), Decimal("1.60")),
    "claude-sonnet-4": Price(Decimal("3.00"), Decimal("15.00")),
    "claude-haiku-3.5": Price(Decimal("0.80"), Decimal("4.00")),
}

#: A large model → the smaller model of the same family that short requests can use.
CHEAPER: dict[str, str] = {
    "gpt-4o": "gpt-4o-mini",
    "gpt-4.1": "gpt-4.1-mini",
    "claude-sonnet-4": "claude-haiku-3.5",
}


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """The list price of one request, to the micro-dollar."""
    return cost_at(PRICES[model], prompt_tokens, completion_tokens)


def cost_at(price: Price, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """One request at ``price``, to the micro-dollar."""
    total = (price.input_per_million * prompt_tokens
             + price.output_per_million * completion_tokens) / 1_000_000
    return total.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def cents(amount: Decimal | float | str) -> str:
    """``1234.5`` → ``"$1,234.50"``: dollars to the cent, half up."""
    value = Decimal(str(amount)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"${value:,.2f}"
