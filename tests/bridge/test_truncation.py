"""Cutting oversized event payloads: never over the cap, always marked."""

from typing import Any

from bridge.truncation import TRUNCATED, cap_payload, payload_bytes


def test_a_payload_within_the_cap_is_left_alone() -> None:
    payload = {"text": "hello", "step": 1}
    assert cap_payload(payload, 1024) is payload


def test_a_long_text_is_shortened_to_the_cap_and_marked() -> None:
    payload: dict[str, Any] = {"text": "x" * 100_000, "step": 3}
    cut = cap_payload(payload, 64 * 1024)
    assert payload_bytes(cut) <= 64 * 1024
    assert cut[TRUNCATED] == {"original_bytes": payload_bytes(payload)}
    assert cut["step"] == 3 and cut["text"] == "x" * len(cut["text"])
    assert len(cut["text"]) > 60_000  # only what had to go
    assert len(payload["text"]) == 100_000  # the caller's payload is not changed


def test_escaped_and_non_ascii_text_is_measured_as_stored() -> None:
    payload = {"text": "é\"\n" * 20_000, "result": {"rows": ["ü" * 5000] * 4}}
    cut = cap_payload(payload, 8 * 1024)
    assert payload_bytes(cut) <= 8 * 1024
    assert cut[TRUNCATED]["original_bytes"] == payload_bytes(payload)


def test_a_payload_of_no_text_keeps_its_short_scalars() -> None:
    payload = {"call_id": "call_1", "tool": "calc", "ok": True, "result": list(range(50_000))}
    cut = cap_payload(payload, 1024)
    assert payload_bytes(cut) <= 1024
    assert cut == {TRUNCATED: {"original_bytes": payload_bytes(payload)},
                   "call_id": "call_1", "tool": "calc", "ok": True}
