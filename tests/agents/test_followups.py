"""Follow-up spend questions resolved against the thread's earlier inputs."""

from __future__ import annotations

import pytest

from agents.followups import SpendQuery, resolve_spend

FIRST = "how much did I spend in the last 7 days?"


@pytest.mark.parametrize(("earlier", "text", "expected"), [
    ([], FIRST, SpendQuery(days=7)),
    ([], "what did models cost me last month", SpendQuery(days=30)),
    ([FIRST], "and the 7 days before that?", SpendQuery(days=7, offset_days=7)),
    ([FIRST, "and the 7 days before that?"], "and the week before?",
     SpendQuery(days=7, offset_days=14)),
    ([FIRST], "only gpt-4o", SpendQuery(days=7, model="gpt-4o")),
    ([FIRST], "only gpt-4o-mini?", SpendQuery(days=7, model="gpt-4o-mini")),
    ([FIRST, "only gpt-4o"], "what about last month?", SpendQuery(days=30, model="gpt-4o")),
    ([FIRST, "only gpt-4o"], "and for all models?", SpendQuery(days=7)),
    ([FIRST], "compare with the week before", SpendQuery(days=7, compare=True)),
    ([FIRST], "how could I cut it?", SpendQuery(days=7, wants_cuts=True)),
    ([FIRST], "last 14 days?", SpendQuery(days=14)),
    # another kind of question between them: the follow-up still refers to the spend one
    ([FIRST, "what is 2 + 2"], "and the 7 days before that?", SpendQuery(days=7, offset_days=7)),
    # a standalone spend question starts afresh
    ([FIRST, "only gpt-4o"], "how much did I spend today?", SpendQuery(days=1)),
])
def test_follow_ups(earlier: list[str], text: str, expected: SpendQuery) -> None:
    assert resolve_spend(earlier, text) == expected


def test_not_spend_without_a_spend_question_before() -> None:
    assert resolve_spend([], "and the 7 days before that?") is None
    assert resolve_spend(["what is 2 + 2"], "only gpt-4o") is None
    assert resolve_spend([FIRST], "what is 2 + 2") is None
