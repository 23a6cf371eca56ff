"""Typed helpers for Redis Streams consumer groups (run queue, lifecycle, ingest)."""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

__all__ = ["Entry", "autoclaim", "ensure_group", "hand_back", "read_group", "touch"]

#: (entry id, fields) as Redis returns them
Entry = tuple[bytes, dict[bytes, bytes]]


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    """Create ``group`` on ``stream`` (and the stream) unless it exists."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def read_group(redis: Redis, stream: str, group: str, consumer: str, *,
                     start: str = ">", count: int = 100, block_ms: int | None = None
                     ) -> list[Entry]:
    """Entries for ``consumer``: new ones (``start=">"``) or its pending ones (``"0"``)."""
    reply = cast(Any, await redis.xreadgroup(group, consumer, {stream: start}, count=count,
                                             block=block_ms))
    if not reply:
        return []
    return [(entry_id, fields) for entry_id, fields in reply[0][1] if fields is not None]


async def autoclaim(redis: Redis, stream: str, group: str, consumer: str, *,
                    min_idle_ms: int, count: int = 100) -> list[Entry]:
    """Take over entries another consumer left pending for ``min_idle_ms``."""
    reply = cast(Any, await redis.xautoclaim(stream, group, consumer, min_idle_ms, "0-0",
                                             count=count))
    return [(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]


async def hand_back(redis: Redis, stream: str, group: str, consumer: str,
                    entry_ids: list[bytes], *, idle_ms: int) -> None:
    """Give entries ``consumer`` read but will not handle to whoever claims next: they
    stay pending, marked idle for ``idle_ms`` (the others' ``min_idle_ms``), so the
    next :func:`autoclaim` of another consumer takes them at once instead of after
    a full idle period."""
    if entry_ids:
        await redis.xclaim(stream, group, consumer, 0, list[Any](entry_ids), idle=idle_ms)


async def touch(redis: Redis, stream: str, group: str, consumer: str,
                entry_ids: list[bytes]) -> None:
    """Reset the idle time of entries ``consumer`` holds and will still handle, so no
    other consumer's :func:`autoclaim` takes them while it is alive."""
    if entry_ids:
        await redis.xclaim(stream, group, consumer, 0, list[Any](entry_ids), justid=True)
