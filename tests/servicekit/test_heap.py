"""settle_heap: startup's objects frozen, later cycles still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from servicekit.heap import YOUNG_THRESHOLD, settle_heap


class Node:
    def __init__(self) -> None:
        self.peer: Node | None = None


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_startup_objects_are_frozen_and_young_collections_rarer() -> None:
    settle_heap()
    assert gc.get_freeze_count() > 1000  # this process's imports, at least
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD


@pytest.mark.usefixtures("restored_gc")
def test_cycles_made_afterwards_are_still_collected() -> None:
    settle_heap()
    first, second = Node(), Node()
    first.peer, second.peer = second, first
    gone = weakref.ref(first)
    del first, second
    gc.collect()
    assert gone() is None
