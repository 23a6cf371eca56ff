"""Cut an event payload that is over the size cap, and mark it as cut.

An oversized payload is never dropped: its longest text fields are shortened until
the payload, serialized as the emitter stores it, fits the cap, and the payload
gains ``"truncated": {"original_bytes": N}`` (N: its serialized size before). A
payload whose bulk is not text keeps only its short top-level scalars.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["TRUNCATED", "cap_payload", "payload_bytes"]

#: the marker's key in a payload that was cut
TRUNCATED = "truncated"
#: top-level scalars a payload of no text keeps (ids that tie it to its run or call)
_KEEP_SCALAR_BYTES = 256
_MAX_ROUNDS = 64


def payload_bytes(payload: Any) -> int:
    """The payload's size as the emitter serializes it."""
    return len(_dumps(payload))


def cap_payload(payload: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """``payload`` itself if it fits ``max_bytes``, else a shortened, marked copy
    that fits (``max_bytes`` must leave room for the marker: at least 128)."""
    original = _dumps(payload)
    if len(original) <= max_bytes:
        return payload
    cut: dict[str, Any] = json.loads(original)  # a copy, as stored (default=str applied)
    cut[TRUNCATED] = {"original_bytes": len(original)}
    for _ in range(_MAX_ROUNDS):
        over = payload_bytes(cut) - max_bytes
        if over <= 0:
            return cut
        if not _shorten_longest(cut, over):
            break
    return _scalars_only(json.loads(original), max_bytes, len(original))


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def _texts(value: Any) -> list[tuple[Any, Any, str]]:
    """Every string leaf as (container, key, text)."""
    found: list[tuple[Any, Any, str]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(item, str):
            found.append((value, key, item))
        elif isinstance(item, dict | list) and key != TRUNCATED:
            found.extend(_texts(item))
    return found


def _shorten_longest(payload: dict[str, Any], over: int) -> bool:
    """Shortens the longest text by at least ``over`` serialized bytes (or empties
    it); False when no text is left to shorten."""
    texts = [t for t in _texts(payload) if t[2]]
    if not texts:
        return False
    container, key, text = max(texts, key=lambda t: len(_dumps(t[2])))
    per_char = (len(_dumps(text)) - 2) / len(text)  # escapes make a char cost more
    drop = min(len(text), int(over / per_char) + 1)
    container[key] = text[:len(text) - drop]
    return True


def _scalars_only(payload: dict[str, Any], max_bytes: int, original: int) -> dict[str, Any]:
    kept: dict[str, Any] = {TRUNCATED: {"original_bytes": original}}
    for key, value in payload.items():
        if key == TRUNCATED or isinstance(value, dict | list):
            continue
        candidate = {**kept, key: value}
        if len(_dumps(value)) <= _KEEP_SCALAR_BYTES and payload_bytes(candidate) <= max_bytes:
            kept = candidate
    return kept
