"""Consumer-group helpers on a real Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from redis.asyncio import Redis

from bridge.groups import (
    SHARD_POLL_MS,
    ShardEntry,
    autoclaim,
    ensure_group,
    read_group,
    read_shards,
    requeue,
    trim_consumed,
)

STREAM, GROUP = "test:queue", "workers"
IDLE_MS = 30_000


async def test_requeued_entries_go_to_the_end_for_any_consumer(redis: Redis) -> None:
    await ensure_group(redis, STREAM, GROUP)
    ids = [cast(bytes, await redis.xadd(STREAM, {"n": str(n)})) for n in range(3)]
    taken = await read_group(redis, STREAM, GROUP, "first", count=2)
    assert [entry_id for entry_id, _ in taken] == ids[:2]
    assert await requeue(redis, STREAM, GROUP, [ids[1]]) == 1
    # the put-back entry now follows the one nobody had read yet; none is pending
    again = await read_group(redis, STREAM, GROUP, "other", count=10)
    assert [fields[b"n"] for _, fields in again] == [b"2", b"1"]
    assert ids[1] not in [entry_id for entry_id, _ in again]
    pending = await redis.xpending_range(STREAM, GROUP, "-", "+", 10)
    assert sorted(p["consumer"] for p in pending) == [b"first", b"other", b"other"]
    assert await requeue(redis, STREAM, GROUP, []) == 0  # nothing to do


async def test_an_entry_gone_meanwhile_is_acknowledged_not_duplicated(redis: Redis) -> None:
    await ensure_group(redis, STREAM, GROUP)
    entry = cast(bytes, await redis.xadd(STREAM, {"n": "x"}))
    await read_group(redis, STREAM, GROUP, "first", count=1)
    await redis.xdel(STREAM, entry)
    assert await requeue(redis, STREAM, GROUP, [entry]) == 0
    assert await redis.xlen(STREAM) == 0
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0
    assert await autoclaim(redis, STREAM, GROUP, "other", min_idle_ms=0) == []


async def test_trim_consumed_removes_only_what_the_group_acknowledged(redis: Redis) -> None:
    assert await trim_consumed(redis, STREAM, GROUP) == 0  # no stream yet
    await ensure_group(redis, STREAM, GROUP)
    ids = [cast(bytes, await redis.xadd(STREAM, {"n": str(n)})) for n in range(6)]
    read = await read_group(redis, STREAM, GROUP, "applier", count=4)
    await redis.xack(STREAM, GROUP, ids[0], ids[1], ids[3])  # ids[2] still pending
    assert await trim_consumed(redis, STREAM, GROUP) == 2
    assert [e for e, _ in cast(list[Any], await redis.xrange(STREAM))] == ids[2:]
    await redis.xack(STREAM, GROUP, ids[2])
    # nothing pending: up to the last delivered; the two never read stay
    assert await trim_consumed(redis, STREAM, GROUP) == 2
    assert [e for e, _ in cast(list[Any], await redis.xrange(STREAM))] == ids[4:]
    assert len(read) == 4


SHARDS = ["test:shard:a", "test:shard:b", "test:shard:c"]


async def _sharded(redis: Redis, counts: list[int]) -> dict[str, list[bytes]]:
    """The shards with their group, and ``counts[i]`` entries on ``SHARDS[i]``."""
    ids: dict[str, list[bytes]] = {}
    for stream, count in zip(SHARDS, counts, strict=True):
        await ensure_group(redis, stream, GROUP)
        ids[stream] = [cast(bytes, await redis.xadd(stream, {"s": stream, "n": str(n)}))
                       for n in range(count)]
    return ids


async def test_read_shards_starts_at_first_and_reads_at_most_count(redis: Redis) -> None:
    ids = await _sharded(redis, [2, 3, 1])
    got = await read_shards(redis, SHARDS, GROUP, "c1", count=4, first=1)
    # b's three, then c's one; a is looked at last and nothing is left for it
    assert [(e.stream, e.id) for e in got] == [
        *((SHARDS[1], i) for i in ids[SHARDS[1]]), (SHARDS[2], ids[SHARDS[2]][0])]
    assert all(isinstance(e, ShardEntry) and e.fields[b"s"] == e.stream.encode() for e in got)
    # wrapping around: from c (empty now) to a
    rest = await read_shards(redis, SHARDS, GROUP, "c1", count=1, first=2)
    assert [(e.stream, e.id) for e in rest] == [(SHARDS[0], ids[SHARDS[0]][0])]
    rest = await read_shards(redis, SHARDS, GROUP, "c1", count=10, first=0)
    assert [(e.stream, e.id) for e in rest] == [(SHARDS[0], ids[SHARDS[0]][1])]
    assert await read_shards(redis, SHARDS, GROUP, "c1", count=10) == []
    # each entry was read once, and is pending on its own shard
    for stream, count in zip(SHARDS, [2, 3, 1], strict=True):
        assert (await redis.xpending(stream, GROUP))["pending"] == count


async def test_read_shards_count_stops_on_the_first_shard(redis: Redis) -> None:
    ids = await _sharded(redis, [5, 5, 5])
    got = await read_shards(redis, SHARDS, GROUP, "c1", count=3, first=2)
    assert [(e.stream, e.id) for e in got] == [(SHARDS[2], i) for i in ids[SHARDS[2]][:3]]
    assert (await redis.xpending(SHARDS[0], GROUP))["pending"] == 0


async def test_read_shards_blocking_with_nothing_waits_one_shard_poll(redis: Redis) -> None:
    await _sharded(redis, [0, 0, 0])
    started = time.monotonic()
    assert await read_shards(redis, SHARDS, GROUP, "c1", count=5, block_ms=10_000) == []
    waited = time.monotonic() - started
    # the poll, not all of block_ms (a wide margin: a busy machine is slow, not 50x)
    assert SHARD_POLL_MS / 1000 * 0.8 <= waited < 5.0
    started = time.monotonic()  # without block_ms: no wait at all
    assert await read_shards(redis, SHARDS, GROUP, "c1", count=5) == []
    assert time.monotonic() - started < SHARD_POLL_MS / 1000 * 20


async def test_read_shards_on_one_stream_blocks_all_of_block_ms(redis: Redis) -> None:
    await _sharded(redis, [0, 0, 0])
    started = time.monotonic()
    assert await read_shards(redis, SHARDS[:1], GROUP, "c1", count=5, block_ms=400) == []
    assert time.monotonic() - started >= 0.35


async def test_read_shards_blocking_wakes_for_an_entry_on_the_first_shard(
        redis: Redis) -> None:
    await _sharded(redis, [0, 0, 0])

    async def add_later() -> bytes:
        await asyncio.sleep(0.03)
        return cast(bytes, await redis.xadd(SHARDS[1], {"n": "late"}))

    adding = asyncio.create_task(add_later())
    got = await read_shards(redis, SHARDS, GROUP, "c1", count=5, block_ms=1500, first=1)
    assert [(e.stream, e.id, e.fields) for e in got] == [
        (SHARDS[1], await adding, {b"n": b"late"})]
