import pytest

from agents.planner import Final, ToolCall, ToolOutcome, Transcript, find_expression


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
