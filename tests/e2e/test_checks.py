"""The e2e checks catch each kind of broken delivery, and say what broke."""

from __future__ import annotations

from typing import Any

from e2e.checks import check_all, check_isolation, check_run_invariants, check_sequence


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
