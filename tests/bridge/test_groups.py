"""Consumer-group helpers on a real Redis."""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis

from bridge.groups import autoclaim, ensure_group, read_group, requeue, trim_consumed

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
