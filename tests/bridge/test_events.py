import pytest
from pydantic import ValidationError

from bridge.events import cancelled, completed, failed, utc_timestamp, validate_event


def _event(**changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "type": "tool_completed", "seq": 1, "epoch": "e", "run_id": "run_1",
        "thread_id": "thr_1", "agent": "data", "ts": utc_timestamp(),
        "payload": {"call_id": "tcl_1", "tool": "calculator", "ok": True, "result": {"v": 1},
                    "duration_ms": 3}}
    event.update(changes)
    return event


def test_accepts_the_contract_shape() -> None:
    assert validate_event(_event()).seq == 1


@pytest.mark.parametrize("changes", [
    {"type": "agent_exploded"},
    {"seq": 0},
    {"payload": {"call_id": "tcl_1", "tool": "x", "ok": False, "duration_ms": 1}},
    {"payload": {"delta": "x"}},
    {"extra": 1},
])
def test_rejects_what_breaks_it(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        validate_event(_event(**changes))


def test_timestamp_is_utc_with_milliseconds() -> None:
    ts = utc_timestamp()
    assert ts.endswith("Z") and len(ts.split(".")[1]) == 4


def test_terminal_payloads_are_built_by_their_models() -> None:
    assert completed("done", duration_ms=5, tool_calls=1) == {
        "result": "done", "duration_ms": 5, "tool_calls": 1}
    assert failed("worker_lost", "gone", "worker_lost") == {
        "error": {"code": "worker_lost", "message": "gone"}, "cause": "worker_lost"}
    assert cancelled("interrupt") == {"by": "interrupt"}
    with pytest.raises(ValidationError):
        failed("x", "y", "sometimes")  # type: ignore[arg-type]
