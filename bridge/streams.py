"""Reads of a user's event history in Redis (the write side is the emit script)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis

from bridge.emitter import new_epoch
from bridge.events import TERMINAL_TYPES
from servicekit.rediskeys import UserKeys

__all__ = ["HistoryPage", "RunPage", "StreamPosition", "UserStreams"]

_ENSURE_EPOCH_LUA = resources.files("bridge").joinpath("ensure_epoch.lua").read_text()


@dataclass(frozen=True, slots=True)
class StreamPosition:
    epoch: str
    last_seq: int


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Events with ``seq`` in ``(after, …]`` in order, as raw JSON texts."""

    events: list[tuple[int, str]]
    oldest_seq: int | None  # oldest seq still held, None when the history is empty


@dataclass(frozen=True, slots=True)
class RunPage:
    """One run's events with ``seq`` in ``(after, cursor]``, in order.

    ``cursor``: the last seq examined (pass it as the next ``after``); ``ended``:
    the run's terminal event is among the events; ``exhausted``: the history
    holds nothing beyond ``cursor`` yet.
    """

    events: list[dict[str, Any]]
    cursor: int
    ended: bool
    exhausted: bool


class UserStreams:
    def __init__(self, redis: Redis, *, history_ttl_s: int = 86_400) -> None:
        self._redis = redis
        self._ensure = redis.register_script(_ENSURE_EPOCH_LUA)
        self._ttl = history_ttl_s

    async def position(self, user_id: str) -> StreamPosition:
        """The user's epoch (created if absent) and last assigned seq."""
        keys = UserKeys(user_id)
        seq, epoch = await self._ensure(keys=[keys.meta, keys.history],
                                        args=[new_epoch(), self._ttl])
        return StreamPosition(epoch=_text(epoch), last_seq=int(seq))

    async def read_after(self, user_id: str, after: int, *, limit: int = 1000) -> HistoryPage:
        """Up to ``limit`` events with ``seq > after``."""
        key = UserKeys(user_id).history
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xrange(key, min=f"{after + 1}-0", max="+", count=limit)
            pipe.xrange(key, min="-", max="+", count=1)
            entries, first = await pipe.execute()
        events = [(_seq_of(entry_id), _text(fields[b"e"])) for entry_id, fields in entries]
        oldest = _seq_of(first[0][0]) if first else None
        return HistoryPage(events=events, oldest_seq=oldest)


    async def read_run(self, user_id: str, run_id: str, after: int, *, limit: int,
                       scan: int = 5000, chunk: int = 1000) -> RunPage:
        """Up to ``limit`` events of ``run_id`` with ``seq > after``, examining at
        most ``scan`` entries of the user's history; stops at the run's terminal
        event. The run's events are interleaved with the user's other runs' in one
        stream: a page may hold fewer than ``limit`` events and still a cursor."""
        key = UserKeys(user_id).history
        cursor, scanned = after, 0
        events: list[dict[str, Any]] = []
        needle = f'"{run_id}"'
        while scanned < scan:
            entries: Any = await self._redis.xrange(key, min=f"{cursor + 1}-0", max="+",
                                                    count=min(chunk, scan - scanned))
            if not entries:
                return RunPage(events, cursor, ended=False, exhausted=True)
            for entry_id, fields in entries:
                cursor, scanned = _seq_of(entry_id), scanned + 1
                raw = _text(fields[b"e"])
                if needle not in raw:  # cheap: most entries are other runs'
                    continue
                event = json.loads(raw)
                if event.get("run_id") != run_id:
                    continue
                events.append(event)
                if event.get("type") in TERMINAL_TYPES:
                    return RunPage(events, cursor, ended=True, exhausted=False)
                if len(events) >= limit:
                    return RunPage(events, cursor, ended=False, exhausted=False)
        return RunPage(events, cursor, ended=False, exhausted=False)


def _seq_of(entry_id: bytes | str) -> int:
    return int(_text(entry_id).split("-", 1)[0])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
