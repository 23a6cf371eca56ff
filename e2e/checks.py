"""Checks of what a user received: each returns violations, each says what broke.

They work on recorded event logs alone, so they are tested on logs with a gap, a
duplicate, a reordering, a missing terminal event or another user's event.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from bridge.events import TERMINAL_TYPES, validate_event

__all__ = ["check_all", "check_complete", "check_isolation", "check_markers",
           "check_run_invariants", "check_schema", "check_sequence", "delivery_counts"]

Event = dict[str, Any]


def check_schema(events: Iterable[Event]) -> list[str]:
    problems = []
    for event in events:
        try:
            validate_event(event)
        except ValidationError as exc:
            problems.append(f"seq {event.get('seq')}: not the contract's shape: "
                            f"{exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}")
    return problems


def check_sequence(events: list[Event], *, first: int | None = None) -> list[str]:
    """``seq`` rises by exactly 1 (from ``first`` when given), one epoch throughout."""
    problems = []
    previous = None if first is None else first - 1
    for event in events:
        seq = event.get("seq")
        if not isinstance(seq, int):
            problems.append(f"an event has no integer seq: {event}")
            continue
        if previous is not None and seq != previous + 1:
            kind = ("duplicate" if seq == previous else "out of order" if seq < previous
                    else f"gap of {seq - previous - 1}")
            problems.append(f"{kind}: seq {seq} after {previous}")
        previous = seq if previous is None else max(previous, seq)
    epochs = {e.get("epoch") for e in events}
    if len(epochs) > 1:
        problems.append(f"more than one epoch: {sorted(map(str, epochs))}")
    return problems


def check_run_invariants(events: list[Event], run_ids: Iterable[str]) -> list[str]:
    """The contract's invariants for each run in ``run_ids``."""
    by_run: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_run[event.get("run_id", "")].append(event)
    problems = []
    for run_id in run_ids:
        run = by_run.get(run_id, [])
        if not run:
            problems.append(f"{run_id}: no event received")
            continue
        types = [e["type"] for e in run]
        if types[0] != "agent_started":
            problems.append(f"{run_id}: first event is {types[0]}, not agent_started")
        terminals = [i for i, t in enumerate(types) if t in TERMINAL_TYPES]
        if not terminals:
            problems.append(f"{run_id}: no terminal event (last is {types[-1]})")
        elif len(terminals) > 1:
            problems.append(f"{run_id}: {len(terminals)} terminal events")
        elif terminals[0] != len(types) - 1:
            problems.append(f"{run_id}: events after the terminal {types[terminals[0]]}")
        open_calls = {e["payload"].get("call_id") for e in run if e["type"] == "tool_executing"}
        for event in run:
            if event["type"] == "tool_completed":
                open_calls.discard(event["payload"].get("call_id"))
        for call_id in sorted(open_calls):
            problems.append(f"{run_id}: tool call {call_id} never completed")
    return problems


def check_isolation(events: Iterable[Event], own_run_ids: set[str], user: str) -> list[str]:
    """No event of a run that is not the user's own."""
    return [f"{user} received an event of {e.get('run_id')} (not theirs): {e.get('type')}"
            for e in events if e.get("run_id") not in own_run_ids]


def check_all(events: list[Event], run_ids: set[str], user: str,
              *, first: int | None = None) -> list[str]:
    return (check_schema(events) + check_sequence(events, first=first)
            + check_run_invariants(events, run_ids) + check_isolation(events, run_ids, user))


def delivery_counts(events: Iterable[Event], run_id: str, expected: int) -> tuple[int, int]:
    """(lost, duplicated) events of ``run_id`` against the ``expected`` count."""
    seqs = [e.get("seq") for e in events if e.get("run_id") == run_id]
    unique = set(seqs)
    return max(0, expected - len(unique)), len(seqs) - len(unique)


def check_complete(events: Iterable[Event], run_id: str, expected: int) -> list[str]:
    """The run arrived whole: ``expected`` events, none twice."""
    lost, duplicated = delivery_counts(events, run_id, expected)
    problems = []
    if lost:
        problems.append(f"{run_id}: {lost} of {expected} events never arrived")
    if duplicated:
        problems.append(f"{run_id}: {duplicated} events arrived twice")
    return problems


def check_markers(frames: Iterable[dict[str, Any]], own: str,
                  markers: Iterable[str]) -> list[str]:
    """No frame a user received carries another user's marker (a random word only
    that user put in its thread title and run inputs)."""
    others = [m for m in markers if m != own]
    problems = []
    for frame in frames:
        text = json.dumps(frame)
        for marker in others:
            if marker in text:
                problems.append(f"the user of {own} received {marker} "
                                f"(seq {frame.get('seq')}, {frame.get('type')})")
    return problems
