"""A thread's memory within its budget: the oldest turns go first."""

from __future__ import annotations

from bridge.memory import (
    NOTE_CALL_CHARS,
    NOTE_CHARS,
    Turn,
    decode_memory,
    encode_memory,
    estimate_tokens,
    tool_note,
    within_budget,
)


def test_tokens_are_a_quarter_of_the_bytes_rounded_up() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1 and estimate_tokens("abcde") == 2
    assert estimate_tokens("日本") == 2  # 6 bytes


def test_the_newest_turns_that_fit_are_kept_oldest_first() -> None:
    turns = [Turn(f"q{n}", "a" * 40) for n in range(5)]  # 1 + 10 tokens each
    newest_first = list(reversed(turns))
    assert within_budget(newest_first, 0) == []
    assert within_budget(newest_first, 22) == turns[3:]
    assert within_budget(newest_first, 1000) == turns


def test_a_turn_too_large_ends_the_memory() -> None:
    newest_first = [Turn("q3", "short"), Turn("q2", "x" * 4000), Turn("q1", "short")]
    assert within_budget(newest_first, 100) == [Turn("q3", "short")]


def test_memory_round_trips_and_malformed_is_none() -> None:
    turns = [Turn("how much?", "$1.00"), Turn("and before?", "€2,00 — ok")]
    assert decode_memory(encode_memory(turns)) == tuple(turns)
    assert decode_memory("[]") == ()
    for bad in ("", "{", '[{"input": 1}]', '"text"', "[1]"):
        assert decode_memory(bad) == ()


def test_a_tool_note_is_a_bounded_line_per_call() -> None:
    note = tool_note([("calculator", {"expression": "6 * 7"}, True, {"value": 42}),
                      ("clock", {}, False, {"code": "rejected", "message": "no"})])
    assert note.splitlines() == [
        'calculator {"expression":"6 * 7"} -> {"value":42}',
        'clock {} -> failed: {"code":"rejected","message":"no"}']
    huge = tool_note([("query_usage", {"days": 7}, True, {"items": ["x" * 100] * 100})])
    assert len(huge) == NOTE_CALL_CHARS and huge.endswith("…")
    many = tool_note([("calculator", {"expression": str(n)}, True, "y" * 200)
                      for n in range(50)])
    assert len(many) <= NOTE_CHARS and many.endswith("\n…")
    assert tool_note([]) == ""


def test_tools_count_in_the_budget_and_round_trip() -> None:
    turn = Turn("q", "a", tools="calculator {} -> 1")
    assert turn.tokens() == 1 + 1 + estimate_tokens("calculator {} -> 1")
    assert decode_memory(encode_memory([turn, Turn("q2", "a2")])) == (turn, Turn("q2", "a2"))
    assert '"tools"' not in encode_memory([Turn("q2", "a2")])  # none: not sent


def test_the_providers_count_of_an_answer_replaces_the_estimate() -> None:
    counted = Turn("q", "a" * 400, answer_tokens=7)  # estimated: 100
    assert counted.tokens() == 1 + 7
    assert within_budget([counted], 8) == [counted]
    assert decode_memory(encode_memory([counted])) == (counted,)
    assert '"answer_tokens"' not in encode_memory([Turn("q", "a")])  # unknown: not sent
