"""Cancellation requests: from any backend replica to the worker running the run.

A request is both a key (seen by a worker that picks the run up later) and a
pub/sub message (seen at once by the worker running it now).
"""

from __future__ import annotations

from redis.asyncio import Redis

from bridge.events import StoppedBy
from servicekit.redisclient import is_cluster
from servicekit.rediskeys import CANCEL_CHANNEL, cancel_key

__all__ = ["parse_cancel_message", "parse_stop", "request_cancel"]


async def request_cancel(redis: Redis, run_id: str, *, by: StoppedBy = "user") -> None:
    if is_cluster(redis):  # its pipelines refuse PUBLISH: the key first, then the message
        await redis.set(cancel_key(run_id), by, ex=3600)
        await redis.publish(CANCEL_CHANNEL, f"{run_id} {by}")
        return
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(cancel_key(run_id), by, ex=3600)
        pipe.publish(CANCEL_CHANNEL, f"{run_id} {by}")
        await pipe.execute()


def parse_stop(value: bytes | str) -> StoppedBy:
    """Who asked for a stop, from a cancel key's value or message (anything but
    ``interrupt`` is the user)."""
    text = value.decode() if isinstance(value, bytes) else value
    return "interrupt" if text == "interrupt" else "user"


def parse_cancel_message(data: bytes | str) -> tuple[str, StoppedBy]:
    """The run and who stopped it, from a message of the cancel channel."""
    text = data.decode() if isinstance(data, bytes) else data
    run_id, _, by = text.partition(" ")
    return run_id, parse_stop(by)
