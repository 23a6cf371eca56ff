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

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterPipeline
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
        client = cast(_WaitingCluster, _WaitingCluster.from_url(
            url, max_connections=max_connections + _PIPELINE_CONNECTIONS,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # a failover takes the node timeout (seconds) to promote a replica: a
            # command retries across it (about 4 s) instead of failing at once
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=12),
            retry_on_error=[ConnectionError, TimeoutError],
            event_dispatcher=EventDispatcher()))
        client.commands_at_once = asyncio.Semaphore(max_connections)
        return cast(Redis, client)
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, socket_timeout=timeout,
        socket_connect_timeout=timeout, health_check_interval=30, retry=retry,
        retry_on_error=[ConnectionError, TimeoutError])
    return Redis(connection_pool=pool)


#: connections per node beyond ``max_connections`` for the pipelines (each holds one
#: per node while it executes; the services run a few)
_PIPELINE_CONNECTIONS = 16


class _WaitingCluster(RedisCluster):
    """A Redis Cluster client whose callers wait for a free connection, as with one
    Redis's blocking pool (redis-py's cluster raises ``MaxConnectionsError`` at once
    instead: a burst of requests would fail). A command or a pipeline's execution
    holds one of ``commands_at_once`` (a pipeline: one connection per node)."""

    commands_at_once: asyncio.Semaphore

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.commands_at_once:
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None,
                 shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # (refused)
        return _WaitingPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py does


class _WaitingPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True,
                      allow_redirections: bool = True) -> list[Any]:
        async with cast(_WaitingCluster, self.cluster_client).commands_at_once:
            return await super().execute(raise_on_error, allow_redirections)


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
