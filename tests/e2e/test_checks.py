"""The e2e checks catch each kind of broken delivery, and say what broke."""

from __future__ import annotations

from typing import Any

from e2e.checks import (
    check_all,
    check_complete,
    check_isolation,
    check_markers,
    check_run_invariants,
    check_schema,
    check_sequence,
    delivery_counts,
)


def _log(*types: str, run: str = "run_1", start: int = 1) -> list[dict[str, Any]]:
    payloads = {
        "agent_started": {"input": "x"}, "agent_thinking": {"text": "t", "step": 1},
        "tool_executing": {"call_id": "tcl_1", "tool": "calculator", "arguments": {}},
        "tool_completed": {"call_id": "tcl_1", "tool": "calculator", "ok": True,
                           "result": 1, "duration_ms": 1},
        "agent_completed": {"result": "r", "duration_ms": 1, "tool_calls": 1},
    }
    return [{"type": t, "seq": start + i, "epoch": "e", "run_id": run, "thread_id": "thr_1",
             "agent": "a", "ts": "2026-11-24T05:00:00.000Z", "payload": payloads[t]}
            for i, t in enumerate(types)]


FULL = ("agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed")


def test_a_good_log_passes() -> None:
    assert check_all(_log(*FULL), {"run_1"}, "usr_1", first=1) == []


def test_gap() -> None:
    log = _log(*FULL)
    del log[2]
    assert any("gap of 1: seq 4 after 2" in p for p in check_sequence(log))


def test_duplicate() -> None:
    log = _log(*FULL)
    log.insert(2, dict(log[1]))
    assert any(p.startswith("duplicate: seq 2") for p in check_sequence(log))


def test_reordering() -> None:
    log = _log(*FULL)
    log[1], log[2] = log[2], log[1]
    problems = check_sequence(log)
    assert any("out of order: seq 2 after 3" in p for p in problems)


def test_missing_terminal_event() -> None:
    problems = check_run_invariants(_log(*FULL[:4]), ["run_1"])
    assert problems == ["run_1: no terminal event (last is tool_completed)"]


def test_tool_call_never_completed() -> None:
    log = _log("agent_started", "tool_executing", "agent_completed")
    assert "run_1: tool call tcl_1 never completed" in check_run_invariants(log, ["run_1"])


def test_another_users_event() -> None:
    log = _log(*FULL) + _log("agent_started", run="run_other", start=6)
    assert check_isolation(log, {"run_1"}, "usr_1") == [
        "usr_1 received an event of run_other (not theirs): agent_started"]


def test_first_seq_is_checked() -> None:
    assert check_sequence(_log(*FULL, start=3), first=1) == ["gap of 2: seq 3 after 0"]


def test_events_after_the_terminal_one() -> None:
    log = _log("agent_started", "agent_completed", "agent_thinking")
    assert check_run_invariants(log, ["run_1"]) == [
        "run_1: events after the terminal agent_completed"]


def test_two_terminal_events() -> None:
    log = _log("agent_started", "agent_completed", "agent_completed")
    assert check_run_invariants(log, ["run_1"]) == ["run_1: 2 terminal events"]


def test_a_run_that_never_arrived() -> None:
    assert check_run_invariants([], ["run_9"]) == ["run_9: no event received"]


def test_another_epoch_midway() -> None:
    log = _log(*FULL)
    log[3]["epoch"] = "other"
    assert check_sequence(log) == ["more than one epoch: ['e', 'other']"]


def test_not_the_contracts_shape() -> None:
    log = _log(*FULL)
    del log[3]["payload"]["tool"]
    problems = check_schema(log)
    assert len(problems) == 1 and problems[0].startswith("seq 4: not the contract's shape")


def test_lost_and_doubled_events_are_counted() -> None:
    log = _log(*FULL)
    received = log[:2] + log[3:] + [log[4]]  # seq 3 lost, seq 5 twice
    assert delivery_counts(received, "run_1", 5) == (1, 1)
    assert check_complete(received, "run_1", 5) == [
        "run_1: 1 of 5 events never arrived", "run_1: 1 events arrived twice"]
    assert check_complete(log, "run_1", 5) == []


def test_another_users_marker_in_any_frame() -> None:
    frames = [*_log(*FULL), {"type": "run_accepted", "run_id": "run_1"}]
    frames[1]["payload"]["text"] = "thinking about zqothermarker"
    assert check_markers(frames, "zqmine", ["zqmine", "zqothermarker"]) == [
        "the user of zqmine received zqothermarker (seq 2, agent_thinking)"]
    assert check_markers(frames, "zqothermarker", ["zqmine", "zqothermarker"]) == []


def test_check_all_reports_each_kind_together() -> None:
    log = _log(*FULL[:3]) + _log("agent_started", run="run_other", start=5)
    problems = check_all(log, {"run_1"}, "usr_1", first=1)
    assert problems == ["gap of 1: seq 5 after 3",
                        "run_1: no terminal event (last is tool_executing)",
                        "run_1: tool call tcl_1 never completed",
                        "usr_1 received an event of run_other (not theirs): agent_started"]
