"""Typed helpers for Redis Streams consumer groups (run queue, lifecycle, ingest)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

__all__ = ["Entry", "ShardEntry", "autoclaim", "ensure_group", "read_group", "read_shards",
           "requeue", "trim_consumed"]

#: (entry id, fields) as Redis returns them
Entry = tuple[bytes, dict[bytes, bytes]]

#: a blocking read waits this long on one shard of several before looking at the
#: others again (a Redis Cluster cannot block on streams of different slots at once)
SHARD_POLL_MS = 100


class ShardEntry(NamedTuple):
    """An entry of one shard of a sharded stream (bridge: StreamShards)."""

    stream: str
    id: bytes
    fields: dict[bytes, bytes]


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


async def read_shards(redis: Redis, streams: Sequence[str], group: str, consumer: str, *,
                      count: int, block_ms: int | None = None, first: int = 0
                      ) -> list[ShardEntry]:
    """Up to ``count`` new entries from the shards, looking at them in turn from
    ``streams[first]``. With ``block_ms`` and nothing found, waits on one shard (all
    of ``block_ms`` when there is one; :data:`SHARD_POLL_MS` of it when there are
    several, the caller then turning to the next shard)."""
    found: list[ShardEntry] = []
    order = [streams[(first + i) % len(streams)] for i in range(len(streams))]
    if len(order) == 1:
        return [ShardEntry(order[0], i, f) for i, f in await read_group(
            redis, order[0], group, consumer, count=count, block_ms=block_ms)]
    for stream in order:
        found += [ShardEntry(stream, i, f) for i, f in await read_group(
            redis, stream, group, consumer, count=count - len(found))]
        if len(found) >= count:
            return found
    if found or block_ms is None:
        return found
    return [ShardEntry(order[0], i, f) for i, f in await read_group(
        redis, order[0], group, consumer, count=count, block_ms=min(block_ms, SHARD_POLL_MS))]


async def autoclaim(redis: Redis, stream: str, group: str, consumer: str, *,
                    min_idle_ms: int, count: int = 100) -> list[Entry]:
    """Take over entries another consumer left pending for ``min_idle_ms``."""
    reply = cast(Any, await redis.xautoclaim(stream, group, consumer, min_idle_ms, "0-0",
                                             count=count))
    return [(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]


#: KEYS[1] the stream; ARGV[1] the group, then entry ids. Each entry that still
#: exists is appended again at the end of the stream and the original acknowledged
#: and deleted, in one step: it is never lost, nor found twice.
_REQUEUE_LUA = """
local moved = 0
for i = 2, #ARGV do
  local entry = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])[1]
  if entry then
    redis.call('XADD', KEYS[1], '*', unpack(entry[2]))
    moved = moved + 1
  end
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
return moved
"""


async def requeue(redis: Redis, stream: str, group: str, entry_ids: list[bytes]) -> int:
    """Put entries a consumer read but will not handle back at the end of the
    stream, for any consumer to read; returns how many were moved."""
    if not entry_ids:
        return 0
    return int(await redis.eval(_REQUEUE_LUA, 1, stream, group, *entry_ids))


async def trim_consumed(redis: Redis, stream: str, group: str) -> int:
    """Remove the entries of ``stream`` that ``group`` (its only consumer group) has
    handled: those before its oldest pending entry, or through its last delivered
    one when none is pending. An unread or unacknowledged entry is never trimmed.
    Returns how many went."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return 0
        raise
    info = next((g for g in groups if _text(g["name"]) == group), None)
    if info is None:
        return 0
    if int(info["pending"]):
        minid = _text((await redis.xpending(stream, group))["min"])
    else:
        ms, seq = _text(info["last-delivered-id"]).split("-")
        minid = f"{ms}-{int(seq) + 1}"
    return int(await redis.xtrim(stream, minid=minid, approximate=False))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
