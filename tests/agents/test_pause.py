"""A paused run as data: what one worker stores is what another resumes."""

from __future__ import annotations

from agents.pause import Paused, decode, encode
from agents.planner import Think, ToolCall, ToolOutcome, Transcript
from bridge.memory import Turn


def test_a_paused_run_round_trips_whole() -> None:
    call = ToolCall("calculator", {"expression": "6 * 7"}, "Using the calculator.", "data")
    transcript = Transcript(
        input="what is 6 * 7 — «exact»",
        outcomes=[ToolOutcome(ToolCall("clock", {}, "time?", None), True, {"iso": "2026"}),
                  ToolOutcome(ToolCall("broken", {"x": [1, 2]}, "try", "data"), False,
                              {"code": "rejected", "message": "no"})],
        thoughts=[Think("thinking aloud", "triage")],
        history=(Turn("earlier question", "earlier answer"),))
    paused = Paused(call_id="tcl_01", call=call, step=3, transcript=transcript, tool_calls=2,
                    elapsed_s=1.25, expires_at="2026-12-04T10:00:00.000Z")
    assert decode(encode(paused)) == paused
