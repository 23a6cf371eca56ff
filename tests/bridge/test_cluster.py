"""The bridge on a real Redis Cluster (Redis 7+): three masters with a replica each.

The emit script stores a user's events on the user's slot and ``SPUBLISH``-es them
there, the lifecycle entries go to the user's shard of the lifecycle stream, the hub
listens on sharded channels, the queue is read over its shards, and a stop request
reaches its key.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from bridge.approvals import Answered, Approvals
from bridge.cancel import request_cancel
from bridge.emitter import EventEmitter, RunEmitter
from bridge.errors import RunFinished
from bridge.fanout import EventSink, Subscription, UserEventHub
from bridge.groups import SHARD_POLL_MS, ensure_group, read_shards
from bridge.queue import RunRequest
from bridge.streams import UserStreams
from e2e.redis_cluster import master_of
from e2e.stack import LocalStack
from servicekit.redisclient import is_cluster, make_redis
from servicekit.rediskeys import (
    CANCEL_CHANNEL,
    CLUSTER_SHARDS,
    LIFECYCLE_STREAM,
    RUN_QUEUE,
    StreamShards,
    UserKeys,
    cancel_key,
)

LIFECYCLE = StreamShards.of(LIFECYCLE_STREAM, cluster=True)


@pytest.fixture
async def cluster(redis_cluster: LocalStack) -> AsyncIterator[Redis]:
    client = make_redis(f"redis://127.0.0.1:{redis_cluster.redis_cluster_ports[0]}",
                        cluster=True)
    assert is_cluster(client)
    try:
        yield client
    finally:
        await client.aclose()


def _two_users(ports: list[int]) -> tuple[str, str]:
    """Two new users whose keys are on different masters and whose lifecycle entries
    go to different shards."""
    tag = uuid.uuid4().hex[:8]
    first = f"usr_{tag}_0"
    for n in range(1, 200):
        other = f"usr_{tag}_{n}"
        if (LIFECYCLE.for_user(other) != LIFECYCLE.for_user(first)
                and master_of(ports, UserKeys(other).meta)
                != master_of(ports, UserKeys(first).meta)):
            return first, other
    raise AssertionError("no two users on different masters")


async def _lifecycle_of(redis: Redis, user: str, run: str) -> list[str]:
    entries = cast(list[Any], await redis.xrange(LIFECYCLE.for_user(user)))
    return [fields[b"type"].decode() for _, fields in entries
            if fields[b"user_id"] == user.encode() and fields[b"run_id"] == run.encode()]


async def _run(emitter: EventEmitter, user: str, run_id: str, steps: int) -> list[int]:
    run = RunEmitter(emitter, user_id=user, run_id=run_id, thread_id="thr", agent="a")
    seqs = [(await run.emit("agent_started", {"input": "x"}))["seq"]]
    for step in range(steps):
        seqs.append((await run.emit("agent_thinking", {"text": "t", "step": step}))["seq"])
    seqs += [e["seq"] for e in await run.emit_many(
        "partial_result", [{"delta": "d1"}, {"delta": "d2"}])]
    seqs.append((await run.emit("agent_completed",
                                {"result": "r", "duration_ms": 1, "tool_calls": 0}))["seq"])
    return seqs


async def test_emits_store_each_users_history_and_lifecycle_on_its_shard(
        cluster: Redis, redis_cluster: LocalStack) -> None:
    user_a, user_b = _two_users(redis_cluster.redis_cluster_ports)
    emitter = EventEmitter(cluster)
    seqs_a, seqs_b = await asyncio.gather(_run(emitter, user_a, "run_a", 2),
                                          _run(emitter, user_b, "run_b", 1))
    assert seqs_a == [1, 2, 3, 4, 5, 6] and seqs_b == [1, 2, 3, 4, 5]
    streams = UserStreams(cluster)
    for user, run, count in ((user_a, "run_a", 6), (user_b, "run_b", 5)):
        page = await streams.read_after(user, 0)
        events = [json.loads(line) for _, line in page.events]
        assert [s for s, _ in page.events] == list(range(1, count + 1))
        assert {e["run_id"] for e in events} == {run}
        assert events[0]["type"] == "agent_started" and events[-1]["type"] == "agent_completed"
        position = await streams.position(user)
        assert position.last_seq == count and {e["epoch"] for e in events} == {position.epoch}
        assert await cluster.hget(UserKeys(user).run(run), "done") == b"1"
        assert await _lifecycle_of(cluster, user, run) == ["agent_started", "agent_completed"]
    # the lifecycle entries are not on the one-Redis stream, nor on another user's shard
    assert await cluster.exists(LIFECYCLE_STREAM) == 0
    assert await _lifecycle_of(cluster, user_a, "run_b") == []
    assert await _lifecycle_of(cluster, user_b, "run_a") == []
    last: dict[bytes, bytes] = cast(list[Any], await cluster.xrange(
        LIFECYCLE.for_user(user_a)))[-1][1]
    assert json.loads(last[b"payload"])["result"] == "r"  # the end's payload


async def test_a_run_ended_on_the_cluster_refuses_more_and_adds_no_lifecycle_entry(
        cluster: Redis, redis_cluster: LocalStack) -> None:
    user, _ = _two_users(redis_cluster.redis_cluster_ports)
    emitter = EventEmitter(cluster)
    base: dict[str, Any] = {"user_id": user, "run_id": "run_x", "thread_id": "thr",
                            "agent": "a"}
    await emitter.emit(**base, type="agent_started", payload={"input": "x"}, number=1)
    await emitter.emit(**base, type="agent_cancelled", payload={"by": "user"}, number=2)
    with pytest.raises(RunFinished):
        await emitter.emit(**base, type="agent_failed", number=3, payload={
            "error": {"code": "worker_lost", "message": "gone"}, "cause": "worker_lost"})
    page = await UserStreams(cluster).read_after(user, 0)
    assert [json.loads(line)["type"] for _, line in page.events] == ["agent_started",
                                                                    "agent_cancelled"]
    assert await _lifecycle_of(cluster, user, "run_x") == ["agent_started", "agent_cancelled"]


def _collect(into: list[int]) -> EventSink:
    def sink(seq: int, _epoch: str, _raw: str) -> None:
        into.append(seq)
    return sink


async def test_the_hub_gets_each_users_events_by_sharded_pub_sub(
        cluster: Redis, redis_cluster: LocalStack) -> None:
    user_a, user_b = _two_users(redis_cluster.redis_cluster_ports)
    hub = UserEventHub(cluster)
    await hub.start()
    got: dict[str, list[int]] = {user_a: [], user_b: []}
    subs = [Subscription(user, _collect(got[user])) for user in got]
    try:
        for sub in subs:
            await hub.subscribe(sub)
        emitter = EventEmitter(cluster)
        await _run(emitter, user_a, "run_a", 1)  # 5 events, a batch among them
        await _run(emitter, user_b, "run_b", 0)  # 4 events
        for _ in range(150):
            if len(got[user_a]) >= 5 and len(got[user_b]) >= 4:
                break
            await asyncio.sleep(0.02)
        assert got == {user_a: [1, 2, 3, 4, 5], user_b: [1, 2, 3, 4]}
        hub.check_alive()
    finally:
        for sub in subs:
            await hub.unsubscribe(sub)
        await hub.stop()


async def test_the_hub_does_not_get_another_users_events(
        cluster: Redis, redis_cluster: LocalStack) -> None:
    user_a, user_b = _two_users(redis_cluster.redis_cluster_ports)
    hub = UserEventHub(cluster)
    await hub.start()
    got: list[int] = []
    sub = Subscription(user_a, _collect(got))
    try:
        await hub.subscribe(sub)
        emitter = EventEmitter(cluster)
        await _run(emitter, user_b, "run_b", 2)  # not user_a's
        await _run(emitter, user_a, "run_a", 0)
        for _ in range(150):
            if len(got) >= 4:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # anything else would have come by now
        assert got == [1, 2, 3, 4]
    finally:
        await hub.unsubscribe(sub)
        await hub.stop()
    assert hub.users == 0


async def test_read_shards_finds_entries_on_every_queue_shard(cluster: Redis) -> None:
    shards = StreamShards.of(f"test:queue:{uuid.uuid4().hex[:8]}", cluster=True)
    assert len(shards.keys) == CLUSTER_SHARDS
    for stream in shards.keys:
        await ensure_group(cluster, stream, "workers")
    added = {}
    for n in (0, 3, 5, 7):
        stream = shards.keys[n]
        added[stream] = cast(bytes, await cluster.xadd(stream, {"n": str(n)}))
    got = await read_shards(cluster, shards.keys, "workers", "w1", count=10, first=2)
    # in turn from the third shard: 3, 5, 7, then around to 0
    assert [(e.stream, e.id, e.fields) for e in got] == [
        (shards.keys[n], added[shards.keys[n]], {b"n": str(n).encode()}) for n in (3, 5, 7, 0)]
    assert await read_shards(cluster, shards.keys, "workers", "w1", count=2, first=1) == []
    # a blocking read with nothing there comes back after one shard's poll
    started = time.monotonic()
    assert await read_shards(cluster, shards.keys, "workers", "w1", count=2,
                             block_ms=10_000) == []
    assert SHARD_POLL_MS / 1000 * 0.8 <= time.monotonic() - started < 5.0
    # count is kept across shards
    for n in range(CLUSTER_SHARDS):
        await cluster.xadd(shards.keys[n], {"n": str(n)})
    got = await read_shards(cluster, shards.keys, "workers", "w2", count=3, first=6)
    assert [e.stream for e in got] == [shards.keys[6], shards.keys[7], shards.keys[0]]


async def test_request_cancel_sets_the_key_and_tells_the_workers(cluster: Redis) -> None:
    run_id = f"run_{uuid.uuid4().hex[:8]}"
    pubsub = cluster.pubsub()  # as a worker listens (agents/worker.py)
    try:
        await pubsub.subscribe(CANCEL_CHANNEL)
        await request_cancel(cluster, run_id, by="interrupt")
        assert await cluster.get(cancel_key(run_id)) == b"interrupt"
        assert 0 < await cluster.ttl(cancel_key(run_id)) <= 3600
        message = None
        for _ in range(50):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                break
        assert message is not None and message["data"] == f"{run_id} interrupt".encode()
    finally:
        await pubsub.aclose()
    await request_cancel(cluster, run_id)
    assert await cluster.get(cancel_key(run_id)) == b"user"


async def test_a_burst_waits_for_a_connection_instead_of_failing(
        redis_cluster: LocalStack) -> None:
    """200 callers at once on a client of 4 connections: commands and pipelines wait
    for one, as on one Redis (redis-py's cluster client alone raises
    MaxConnectionsError)."""
    client = make_redis(f"redis://127.0.0.1:{redis_cluster.redis_cluster_ports[0]}",
                        cluster=True, max_connections=4)

    async def one(n: int) -> list[Any]:
        await client.set(f"burst:{n}", n)
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(f"burst:{n}")
            pipe.incr(f"burst:count:{n}")
            return await pipe.execute()

    try:
        replies = await asyncio.gather(*(one(n) for n in range(200)))
        assert [(int(value), count) for value, count in replies] == [
            (n, 1) for n in range(200)]
    finally:
        await client.aclose()


async def test_an_approval_on_the_cluster_queues_one_resume_on_the_users_shard(
        cluster: Redis) -> None:
    """The answer is recorded by the script on the run's slot, then the resume entry
    goes to the user's queue shard and the run's hash marks it; a second answer and
    a stop find the first."""
    user, run = f"usr_appr_{uuid.uuid4().hex}", "run_appr"
    request = RunRequest(run_id=run, user_id=user, thread_id="thr_appr", agent="supervisor",
                         input="what is 6 * 7")
    approvals = Approvals(cluster)
    now = int(time.time() * 1000)
    await cluster.hset(UserKeys(user).run(run), "n", 3)
    await approvals.park(user, run, call_id="tcl_1", expires_ms=now + 60_000,
                         state='{"paused": true}', asked={"call_id": "tcl_1"})
    assert await approvals.answer(request, "tcl_1", approve=True, now_ms=now) is Answered.OK
    assert await approvals.answer(request, "tcl_1", approve=False, now_ms=now) \
        is Answered.ANSWERED
    assert await approvals.stop(user, run, "user", now_ms=now) is Answered.ANSWERED
    shard = StreamShards.of(RUN_QUEUE, cluster=True).for_user(user)
    entries: Any = await cluster.xrange(shard)
    mine = [(i, f) for i, f in entries if f[b"run_id"] == run.encode()]
    assert len(mine) == 1
    assert RunRequest.from_fields(mine[0][1]) == RunRequest(**{**request.fields(),
                                                               "resume": "1"})
    assert await cluster.hget(UserKeys(user).run(run), "q") == mine[0][0]
    taken = await approvals.take(user, run)
    assert taken is not None and taken.approved and taken.events == 3
