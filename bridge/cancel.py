"""Cancellation requests: from any backend replica to the worker running the run.

A request is both a key (seen by a worker that picks the run up later) and a
pub/sub message (seen at once by the worker running it now).
"""

from __future__ import annotations

from typing import Literal

from redis.asyncio import Redis

from servicekit.rediskeys import CANCEL_CHANNEL, cancel_key

__all__ = ["request_cancel"]


async def request_cancel(redis: Redis, run_id: str, *,
                         by: Literal["user", "interrupt"] = "user") -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(cancel_key(run_id), by, ex=3600)
        pipe.publish(CANCEL_CHANNEL, f"{run_id} {by}")
        await pipe.execute()
