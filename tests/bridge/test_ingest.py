"""The ingest stream's cap and trimming, against a real redis-server: a full stream
refuses appends (backpressure) and only acknowledged entries are ever trimmed."""

import pytest
from redis.asyncio import Redis

from bridge.groups import ensure_group, read_group, trim_consumed
from bridge.ingest import (
    IngestBusy,
    append_command,
    append_retrying,
    append_rows,
)
from servicekit.rediskeys import INGEST_GROUP, INGEST_STREAM


async def test_a_full_stream_refuses_appends_and_keeps_every_row(redis: Redis) -> None:
    for i in range(5):
        await append_rows(redis, "usage", [{"n": i}], maxlen=5)
    with pytest.raises(IngestBusy):
        await append_rows(redis, "usage", [{"n": 5}], maxlen=5)
    assert await redis.execute_command(*append_command("usage", [{"n": 5}], maxlen=5)) == 0
    with pytest.raises(IngestBusy):
        await append_retrying(redis.execute_command, append_command("usage", [], maxlen=5),
                              attempts=2, first_delay_s=0.01)
    assert await redis.xlen(INGEST_STREAM) == 5  # nothing unread was trimmed


async def test_only_acknowledged_entries_are_trimmed(redis: Redis) -> None:
    await ensure_group(redis, INGEST_STREAM, INGEST_GROUP)
    for i in range(10):
        await append_rows(redis, "usage", [{"n": i}])
    read = await read_group(redis, INGEST_STREAM, INGEST_GROUP, "c1", start=">", count=6)
    await redis.xack(INGEST_STREAM, INGEST_GROUP, *[e for e, _ in read[:3]])
    await trim_consumed(redis, INGEST_STREAM, INGEST_GROUP)
    assert await redis.xlen(INGEST_STREAM) == 7  # read but pending, and unread, stay
    await redis.xack(INGEST_STREAM, INGEST_GROUP, *[e for e, _ in read[3:]])
    await trim_consumed(redis, INGEST_STREAM, INGEST_GROUP)
    assert await redis.xlen(INGEST_STREAM) == 4  # the unread ones
    await append_rows(redis, "usage", [{"n": 10}], maxlen=5)  # room again
