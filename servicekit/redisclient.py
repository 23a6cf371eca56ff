"""The one way services build their Redis client: one Redis, or a Redis Cluster.

A blocking pool: under a burst (hundreds of runs emitting at once) callers wait
for a free connection up to ``timeout`` instead of failing with "Too many
connections". A command on a connection that died (Redis restarted) is retried
on a fresh one, so the first call after a restart does not fail.

``cluster=True`` gives redis-py's ``RedisCluster`` (the URL names any one node; the
others are discovered). It follows ``MOVED`` after a failover, retries a command
whose node went away, and its pub/sub subscribes sharded channels on the node
that owns their slot. The services keep their one client type in annotations:
the commands they use mean the same on both, and :func:`is_cluster` tells the
few places that differ (the stream shards, ``SPUBLISH``, cross-slot scripts).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.event import (
    AsyncAfterSlotsCacheRefreshEvent,
    AsyncEventListenerInterface,
    EventDispatcher,
)
from redis.exceptions import ConnectionError, TimeoutError

__all__ = ["is_cluster", "make_redis", "on_topology_change"]


def make_redis(url: str, *, timeout: float = 2.0, max_connections: int = 64,
               cluster: bool = False) -> Redis:
    if cluster:
        client = RedisCluster.from_url(
            url, max_connections=max_connections, socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # a failover takes the node timeout (seconds) to promote a replica: a
            # command retries across it (about 4 s) instead of failing at once
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=12),
            retry_on_error=[ConnectionError, TimeoutError],
            event_dispatcher=EventDispatcher())
        return cast(Redis, client)
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, socket_timeout=timeout,
        socket_connect_timeout=timeout, health_check_interval=30, retry=retry,
        retry_on_error=[ConnectionError, TimeoutError])
    return Redis(connection_pool=pool)


def is_cluster(redis: Any) -> bool:
    return isinstance(redis, RedisCluster)


class _Listener(AsyncEventListenerInterface):
    def __init__(self, callback: Callable[[], Awaitable[None] | None]) -> None:
        self._callback = callback

    async def listen(self, event: object) -> None:
        result = self._callback()
        if result is not None:
            await result


def on_topology_change(redis: Redis, callback: Callable[[], Awaitable[None] | None]) -> None:
    """Call ``callback`` whenever a Redis Cluster client learns that a slot moved to
    another node (a failover promoted a replica); nothing on one Redis."""
    if not is_cluster(redis):
        return
    # the dispatcher make_redis gave the client, which its nodes manager uses
    dispatcher = cast(Any, redis)._event_dispatcher
    dispatcher.register_listeners({AsyncAfterSlotsCacheRefreshEvent: [_Listener(callback)]})
