"""The tools without I/O: savings arithmetic, the clock, prices."""

from decimal import Decimal

import pytest

from agents.builtin_tools import ClockArgs, EstimateSavingsArgs, _clock, _estimate_savings
from agents.context import RunContext
from agents.errors import ToolError
from agents.pricing import cents, cost_usd

NO_CONTEXT: RunContext = None  # type: ignore[assignment]  # these tools do not use it


def test_cost_and_cents() -> None:
    assert cost_usd("gpt-4o", 1000, 500) == Decimal("0.007500")
    assert cents(Decimal("0.005")) == "$0.01" and cents(1234.5) == "$1,234.50"


async def test_savings_move_short_requests_to_the_smaller_model() -> None:
    result = await _estimate_savings(NO_CONTEXT, EstimateSavingsArgs.model_validate({"items": [
        {"key": "gpt-4o", "requests": 10, "cost_usd": 1.0, "short_requests": 4,
         "short_prompt_tokens": 40_000, "short_completion_tokens": 800, "short_cost_usd": 0.108},
        {"key": "unknown-model", "requests": 1, "cost_usd": 1.0, "short_requests": 1,
         "short_prompt_tokens": 1, "short_completion_tokens": 1, "short_cost_usd": 0.5}]}))
    [rec] = result["recommendations"]
    # gpt-4o-mini: 40,000 x 0.15 + 800 x 0.60 per million = 0.00648
    assert rec == {"from_model": "gpt-4o", "to_model": "gpt-4o-mini", "requests": 4,
                   "current_cost_usd": 0.108, "projected_cost_usd": 0.00648,
                   "saving_usd": 0.10152}
    assert result["total_saving_usd"] == 0.10152 and result["total_cost_usd"] == 2.0


async def test_clock_knows_zones_and_refuses_unknown_ones() -> None:
    now = await _clock(NO_CONTEXT, ClockArgs(timezone="Asia/Tokyo"))
    assert now["iso"].endswith("+09:00")
    with pytest.raises(ToolError) as caught:
        await _clock(NO_CONTEXT, ClockArgs(timezone="Mars/Olympus"))
    assert caught.value.code == "unknown_timezone"
