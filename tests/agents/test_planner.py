import pytest

from agents.planner import BuiltinPlanner, Final, ToolCall, ToolOutcome, Transcript, find_expression


@pytest.mark.parametrize(("text", "expression"), [
    ("what is 17 * 23", "17 * 23"), ("What's 17*23?", "17*23"),
    ("compute (2 + 3) * 4", "(2 + 3) * 4"),
    ("12 x 12 please", "12 * 12"), ("hello there", None), ("I have 3 cats", None),
])
def test_finds_the_expression(text: str, expression: str | None) -> None:
    assert find_expression(text) == expression


async def test_plans_a_calculator_call_then_answers() -> None:
    planner = BuiltinPlanner()
    transcript = Transcript(input="what is 17 * 23")
    step = await planner.next_step(transcript)
    assert isinstance(step, ToolCall) and step.arguments == {"expression": "17 * 23"}
    transcript.outcomes.append(ToolOutcome(step, True, {"expression": "17 * 23", "value": 391}))
    final = await planner.next_step(transcript)
    assert isinstance(final, Final) and final.answer == "17 * 23 = 391"


async def test_answers_without_tools_when_nothing_to_compute() -> None:
    assert isinstance(await BuiltinPlanner().next_step(Transcript(input="hi")), Final)
