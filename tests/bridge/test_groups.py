"""Consumer-group helpers on a real Redis."""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis

from bridge.groups import autoclaim, ensure_group, hand_back, read_group, touch

STREAM, GROUP = "test:queue", "workers"
IDLE_MS = 30_000


async def test_entries_handed_back_are_claimed_by_another_consumer_at_once(
        redis: Redis) -> None:
    await ensure_group(redis, STREAM, GROUP)
    ids = [cast(bytes, await redis.xadd(STREAM, {"n": str(n)})) for n in range(3)]
    taken = await read_group(redis, STREAM, GROUP, "stopping", count=3)
    assert [entry_id for entry_id, _ in taken] == ids
    # just read: not idle long enough for anyone else
    assert await autoclaim(redis, STREAM, GROUP, "other", min_idle_ms=IDLE_MS) == []
    await hand_back(redis, STREAM, GROUP, "stopping", ids[1:], idle_ms=IDLE_MS)
    claimed = await autoclaim(redis, STREAM, GROUP, "other", min_idle_ms=IDLE_MS)
    assert [(entry_id, fields[b"n"]) for entry_id, fields in claimed] == [
        (ids[1], b"1"), (ids[2], b"2")]
    await hand_back(redis, STREAM, GROUP, "stopping", [], idle_ms=IDLE_MS)  # nothing to do


async def test_touched_entries_stay_with_their_consumer(redis: Redis) -> None:
    await ensure_group(redis, STREAM, GROUP)
    ids = [cast(bytes, await redis.xadd(STREAM, {"n": str(n)})) for n in range(2)]
    await read_group(redis, STREAM, GROUP, "waiting", count=2)
    await hand_back(redis, STREAM, GROUP, "waiting", ids, idle_ms=IDLE_MS)  # long idle
    await touch(redis, STREAM, GROUP, "waiting", ids[:1])  # still held: idle again 0
    claimed = await autoclaim(redis, STREAM, GROUP, "other", min_idle_ms=IDLE_MS)
    assert [entry_id for entry_id, _ in claimed] == ids[1:]
    await touch(redis, STREAM, GROUP, "waiting", [])  # nothing to do
