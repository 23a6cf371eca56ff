"""Which read run a worker starts next: round-robin over users, with a share cap.

The worker reads queue entries for its free slots into this choice (and, when a
user at the cap holds the head of the queue, a bounded look past it), asks
:meth:`FairShare.next_to_start` for each free slot, and puts back what is left
(:meth:`FairShare.drain`). Users take turns;
a user already running ``cap`` runs (``max_user_share`` of the worker's slots, at
least one) is passed over while a user below the cap has runs waiting. No slot
stays idle while runs wait: when every waiting user is at the cap, the one running
fewest goes next (a user alone may use every slot). Switched off, it is first come,
first served. I/O-free: the caller owns the slots, the queue and the clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["FairShare", "share_cap"]

T = TypeVar("T")


def share_cap(concurrency: int, max_user_share: float) -> int:
    """The slots one user may hold while others wait: a share of ``concurrency``,
    at least one."""
    return max(1, math.floor(concurrency * max_user_share))


class FairShare(Generic[T]):
    def __init__(self, *, concurrency: int, max_user_share: float, enabled: bool = True) -> None:
        self.cap = share_cap(concurrency, max_user_share)
        self.enabled = enabled
        self._waiting: OrderedDict[str, deque[T]] = OrderedDict()  # turn order of users
        self._fifo: deque[tuple[str, T]] = deque()  # arrival order (switched off)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[T]:
        """Every waiting entry (any order)."""
        for entries in self._waiting.values():
            yield from entries

    def add(self, user_id: str, entry: T) -> None:
        self._waiting.setdefault(user_id, deque()).append(entry)
        self._fifo.append((user_id, entry))
        self._size += 1

    def only_capped(self, running_per_user: Mapping[str, int]) -> bool:
        """Whether entries wait and every waiting user already runs ``cap`` runs (the
        next start would go past the share)."""
        return bool(self._size) and all(running_per_user.get(user, 0) >= self.cap
                                        for user in self._waiting)

    def next_to_start(self, running_per_user: Mapping[str, int]) -> T | None:
        """The entry to start in a free slot (taken out of the waiting area), or None
        when nothing waits."""
        if not self._size:
            return None
        if not self.enabled:
            user_id, _ = self._fifo[0]
            return self._take(user_id)
        chosen = next((user for user in self._waiting
                       if running_per_user.get(user, 0) < self.cap), None)
        if chosen is None:  # all at the cap: the least served goes, no slot stays idle
            chosen = min(self._waiting, key=lambda user: running_per_user.get(user, 0))
        return self._take(chosen)

    def drain(self) -> list[T]:
        """Empty the choice, returning what waited (to put back in the queue)."""
        entries = list(self)
        self._waiting.clear()
        self._fifo.clear()
        self._size = 0
        return entries

    def _take(self, user_id: str) -> T:
        entries = self._waiting.pop(user_id)  # its turn is used: to the back of the line
        entry = entries.popleft()
        if entries:
            self._waiting[user_id] = entries
        self._fifo.remove((user_id, entry))
        self._size -= 1
        return entry
