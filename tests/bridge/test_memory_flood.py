"""Redis under a history flood, against a real redis-server with a small memory
bound and the stack's policy (noeviction): each user's history stays within its
byte cap, so one flooding user trims their own history and nothing else; when
many users flood at once, writes are refused at the bound (the emitter raises,
a backpressure) and no queue entry, lifecycle entry, lease, ticket or unread
ingest row is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from bridge.emitter import EventEmitter
from bridge.errors import EmitError
from bridge.ingest import append_rows
from bridge.streams import UserStreams
from e2e.stack import LocalStack, StackConfig
from servicekit.rediskeys import (
    INGEST_STREAM,
    LIFECYCLE_STREAM,
    RUN_QUEUE,
    lease_key,
    ws_ticket_key,
)
from tests.conftest import emptied, starts_servers

MAXMEMORY = 64 * 1024 * 1024
EVENT = {"text": "f" * 60_000}


@pytest.fixture(scope="module")
@starts_servers
def small_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(StackConfig.for_tests(tmp_path_factory.mktemp("redis64"),
                                             redis_maxmemory="64mb"))
    stack.start(only=("redis",))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def redis(small_redis: LocalStack) -> AsyncIterator[Redis]:
    async with emptied(small_redis.redis_url) as client:
        yield client


async def _seed(redis: Redis) -> None:
    """What must never be lost: queue entries, unapplied lifecycle entries, leases,
    tickets, unread ingest rows."""
    for i in range(50):
        await redis.xadd(RUN_QUEUE, {"run_id": f"run_{i}"})
        await redis.xadd(LIFECYCLE_STREAM, {"run_id": f"run_{i}", "type": "agent_started"})
        await redis.set(lease_key(f"run_{i}"), "worker-1", px=600_000)
        await redis.set(ws_ticket_key(f"t{i}"), "{}", ex=600)
        await append_rows(redis, "usage", [{"user_id": "usr_x", "n": i}])


async def _counts(redis: Redis) -> tuple[int, int, int, int, int]:
    leases = len([k async for k in redis.scan_iter(lease_key("*"))])
    tickets = len([k async for k in redis.scan_iter(ws_ticket_key("*"))])
    return (await redis.xlen(RUN_QUEUE), await redis.xlen(LIFECYCLE_STREAM), leases, tickets,
            await redis.xlen(INGEST_STREAM))


async def _flood(emitter: EventEmitter, user: str, events: int) -> int:
    """Emits ``events`` large events for ``user``; returns how many were refused."""
    refused = 0
    for i in range(events):
        try:
            await emitter.emit(user_id=user, run_id=f"run_{user}", thread_id="thr_1",
                               agent="a", type="partial_result", payload=EVENT, number=i + 1)
        except EmitError:
            refused += 1
    return refused


async def _used(redis: Redis) -> tuple[int, int]:
    info = await redis.info("memory")
    return int(info["used_memory"]), int(info["used_memory_peak"])


async def test_one_user_flooding_trims_only_their_own_history(redis: Redis) -> None:
    await _seed(redis)
    emitter = EventEmitter(redis)  # the default caps: 8 MiB a user, 64 KiB an event
    for _ in range(20):
        await emitter.emit(user_id="usr_quiet", run_id="run_q", thread_id="thr_1", agent="a",
                           type="partial_result", payload={"text": "hello"})
    before = await _counts(redis)
    assert await _flood(emitter, "usr_flood", 1500) == 0  # ~90 MB offered
    used, peak = await _used(redis)
    assert peak < MAXMEMORY
    assert await _counts(redis) == before
    streams = UserStreams(redis)
    flood = await streams.read_after("usr_flood", 0, limit=10_000)
    assert flood.oldest_seq is not None and flood.oldest_seq > 1000
    assert sum(len(raw) for _, raw in flood.events) <= 8 * 1024 * 1024
    quiet = await streams.read_after("usr_quiet", 0)
    assert [s for s, _ in quiet.events] == list(range(1, 21))
    print(f"one flooding user: used {used / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB, "
          f"kept {len(flood.events)} of 1500 events")


async def test_many_users_flooding_are_refused_at_the_bound(redis: Redis) -> None:
    await _seed(redis)
    before = await _counts(redis)
    emitter = EventEmitter(redis, emit_timeout_s=0.2)
    refused = await asyncio.gather(*(_flood(emitter, f"usr_{n}", 150) for n in range(12)))
    used, peak = await _used(redis)
    assert sum(refused) > 0  # 12 users x 8 MiB do not fit in 64 MB: writes refused
    # what is stored stays under the bound; the peak also counts the requests in flight
    # (their query buffers), which Redis reads before it refuses them
    assert used < MAXMEMORY
    assert await _counts(redis) == before
    print(f"twelve flooding users: {sum(refused)} of 1800 emits refused, used "
          f"{used / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB")
