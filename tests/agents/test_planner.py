import pytest

from agents.errors import PlannerError
from agents.planner import (
    MAX_TICK_BYTES,
    MAX_TICK_INTERVAL_MS,
    MAX_TICKS,
    Final,
    TickerPlanner,
    ToolCall,
    ToolOutcome,
    Transcript,
    find_expression,
)


@pytest.mark.parametrize(("text", "expression"), [
    ("what is 17 * 23", "17 * 23"), ("What's 17*23?", "17*23"),
    ("compute (2 + 3) * 4", "(2 + 3) * 4"),
    ("12 x 12 please", "12 * 12"), ("hello there", None), ("I have 3 cats", None),
])
def test_finds_the_expression(text: str, expression: str | None) -> None:
    assert find_expression(text) == expression


def test_outcomes_and_thoughts_start_empty() -> None:
    transcript = Transcript(input="x")
    transcript.outcomes.append(ToolOutcome(ToolCall("t", {}, ""), True, 1))
    assert Transcript(input="y").outcomes == [] and Transcript(input="y").thoughts == []
    assert isinstance(Final("a"), Final)


async def test_the_ticker_streams_its_ticks_lazily() -> None:
    final = await TickerPlanner().next_step(Transcript(input="ticks 3 every 5ms of 12 bytes"))
    assert isinstance(final, Final) and final.delta_interval_s == 0.005
    assert not isinstance(final.deltas, (tuple, list))  # built as they are sent
    assert list(final.deltas) == ["tick 1 .....", "tick 2 .....", "tick 3 ....."]
    assert final.answer == "streamed 3 ticks"


async def test_the_ticker_at_its_bounds() -> None:
    text = f"ticks {MAX_TICKS} every {MAX_TICK_INTERVAL_MS}ms of {MAX_TICK_BYTES} bytes"
    final = await TickerPlanner().next_step(Transcript(input=text))
    assert isinstance(final, Final) and len(next(iter(final.deltas))) == MAX_TICK_BYTES


@pytest.mark.parametrize(("text", "bound"), [
    (f"ticks {MAX_TICKS + 1}", f"at most {MAX_TICKS} ticks"),
    ("ticks 5 every 0ms", f"1 to {MAX_TICK_INTERVAL_MS} ms apart"),
    (f"ticks 5 every {MAX_TICK_INTERVAL_MS + 1}ms", f"1 to {MAX_TICK_INTERVAL_MS} ms apart"),
    (f"ticks 5 of {MAX_TICK_BYTES + 1} bytes", f"at most {MAX_TICK_BYTES} bytes"),
])
async def test_the_ticker_refuses_a_request_beyond_a_bound(text: str, bound: str) -> None:
    with pytest.raises(PlannerError, match=bound):
        await TickerPlanner().next_step(Transcript(input=text))
