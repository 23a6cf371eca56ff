"""Automatic pipelining against a real redis-server."""

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, ResponseError

from e2e.stack import free_port
from servicekit.autopipeline import AutoPipeline
from servicekit.redisclient import make_redis


async def test_concurrent_commands_share_round_trips_and_get_their_own_replies(
        redis: Redis) -> None:
    auto = AutoPipeline(redis)
    replies = await asyncio.gather(*(auto.execute("INCRBY", f"k{n % 7}", n)
                                     for n in range(300)))
    totals: dict[int, int] = {}
    for n, reply in enumerate(replies):
        totals[n % 7] = totals.get(n % 7, 0) + n
        assert reply == totals[n % 7]  # each caller sees the counter right after its own
    assert auto.batches < 10


async def test_an_error_reaches_its_caller_only(redis: Redis) -> None:
    auto = AutoPipeline(redis)
    await redis.set("text", "not a number")
    results = await asyncio.gather(auto.execute("INCR", "counter"), auto.execute("INCR", "text"),
                                   auto.execute("GET", "text"), return_exceptions=True)
    assert results[0] == 1
    assert isinstance(results[1], ResponseError)
    assert results[2] == b"not a number"


async def test_a_script_redis_lost_is_loaded_again(redis: Redis) -> None:
    script = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    auto = AutoPipeline(redis)
    assert await auto.script(script, ["s"], [2]) == 2
    await redis.script_flush()  # as after a restart of Redis
    replies = await asyncio.gather(*(auto.script(script, ["s"], [1]) for _ in range(20)))
    assert sorted(replies) == list(range(3, 23))  # each ran exactly once


async def test_a_cancelled_caller_leaves_the_batch_to_the_others(redis: Redis) -> None:
    auto = AutoPipeline(redis)
    callers = [asyncio.create_task(auto.execute("INCR", "c")) for _ in range(50)]
    await asyncio.sleep(0)
    callers[10].cancel()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert isinstance(results[10], asyncio.CancelledError)
    others = [r for n, r in enumerate(results) if n != 10]
    assert all(isinstance(r, int) for r in others)
    assert len(set(others)) == 49
    assert await auto.execute("INCR", "c") == 51  # the cancelled one was sent all the same


async def test_redis_away_fails_every_caller_and_the_next_batch_tries_again() -> None:
    client = make_redis(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    auto = AutoPipeline(client)
    try:
        results = await asyncio.gather(*(auto.execute("PING") for _ in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(r, ConnectionError) for r in results)
        with pytest.raises(ConnectionError):
            await auto.execute("PING")
    finally:
        await client.aclose()
