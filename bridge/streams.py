"""Reads of a user's event history in Redis (the write side is the emit script)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from redis.asyncio import Redis

from bridge.emitter import new_epoch
from bridge.keys import UserKeys

__all__ = ["HistoryPage", "StreamPosition", "UserStreams"]

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


def _seq_of(entry_id: bytes | str) -> int:
    return int(_text(entry_id).split("-", 1)[0])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
