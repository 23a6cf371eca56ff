"""The waiting area's choice of the next run: round-robin, share cap, work-conserving."""

from __future__ import annotations

from collections import Counter

import pytest

from agents.fairshare import FairShare, share_cap


def test_the_cap_is_a_share_of_the_slots_and_at_least_one() -> None:
    assert share_cap(50, 0.25) == 12
    assert share_cap(8, 0.25) == 2
    assert share_cap(2, 0.25) == 1


def test_users_take_turns() -> None:
    fair: FairShare[str] = FairShare(concurrency=8, max_user_share=0.5)
    for n in range(3):
        fair.add("a", f"a{n}")
    fair.add("b", "b0")
    fair.add("c", "c0")
    order = [fair.next_to_start({}) for _ in range(5)]
    assert order == ["a0", "b0", "c0", "a1", "a2"]
    assert fair.next_to_start({}) is None
    assert len(fair) == 0


def test_a_user_at_the_cap_is_passed_over_while_another_waits() -> None:
    fair: FairShare[str] = FairShare(concurrency=8, max_user_share=0.25)
    for n in range(5):
        fair.add("a", f"a{n}")
    fair.add("b", "b0")
    assert fair.next_to_start({"a": 2}) == "b0"


def test_a_user_alone_uses_every_slot() -> None:
    fair: FairShare[str] = FairShare(concurrency=8, max_user_share=0.25)
    fair.add("a", "a0")
    assert fair.next_to_start({"a": 7}) == "a0"


def test_no_slot_stays_idle_when_every_waiting_user_is_at_the_cap() -> None:
    fair: FairShare[str] = FairShare(concurrency=8, max_user_share=0.25)
    fair.add("a", "a0")
    fair.add("b", "b0")
    assert fair.next_to_start({"a": 3, "b": 2}) == "b0"  # the least served
    assert fair.next_to_start({"a": 3, "b": 3}) == "a0"


def test_a_heavy_user_holds_only_its_share_of_freed_slots() -> None:
    """A fills the worker alone; then B and C queue: each slot that frees goes to
    them until they hold their share; then the least served goes."""
    fair: FairShare[str] = FairShare(concurrency=8, max_user_share=0.25)
    running = Counter({"a": 8})
    for n in range(100):
        fair.add("a", f"a{n}")
    for n in range(10):
        fair.add("b", f"b{n}")
        fair.add("c", f"c{n}")
    for _ in range(4):  # four of A's runs end, one by one
        running["a"] -= 1
        entry = fair.next_to_start(running)
        assert entry is not None and entry[0] in "bc"
        running[entry[0]] += 1
    assert running == {"a": 4, "b": 2, "c": 2}
    running["a"] -= 1
    entry = fair.next_to_start(running)
    assert entry is not None and entry[0] in "bc"


def test_switched_off_it_is_first_come_first_served() -> None:
    fair: FairShare[str] = FairShare(concurrency=8, max_user_share=0.25, enabled=False)
    for n in range(3):
        fair.add("a", f"a{n}")
    fair.add("b", "b0")
    assert [fair.next_to_start({"a": 8}) for _ in range(4)] == ["a0", "a1", "a2", "b0"]


@pytest.mark.parametrize("enabled", [True, False])
def test_drain_returns_every_waiting_entry(enabled: bool) -> None:
    fair: FairShare[str] = FairShare(concurrency=4, max_user_share=0.25, enabled=enabled)
    fair.add("a", "a0")
    fair.add("b", "b0")
    fair.add("a", "a1")
    assert sorted(fair.drain()) == ["a0", "a1", "b0"]
    assert len(fair) == 0 and fair.next_to_start({}) is None


def test_only_capped_says_when_the_next_start_would_pass_the_share() -> None:
    fair: FairShare[str] = FairShare(concurrency=4, max_user_share=0.5)  # cap 2
    assert not fair.only_capped({})  # nothing waits
    fair.add("a", "a1")
    assert not fair.only_capped({"a": 1})
    assert fair.only_capped({"a": 2})
    fair.add("b", "b1")
    assert not fair.only_capped({"a": 2})  # b is below the cap
    assert fair.only_capped({"a": 2, "b": 3})
