"""The one way services build their Redis client.

A blocking pool: under a burst (hundreds of runs emitting at once) callers wait
for a free connection up to ``timeout`` instead of failing with "Too many
connections". A command on a connection that died (Redis restarted) is retried
on a fresh one, so the first call after a restart does not fail.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

__all__ = ["make_redis"]


def make_redis(url: str, *, timeout: float = 2.0, max_connections: int = 64) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, socket_timeout=timeout,
        socket_connect_timeout=timeout, health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3),
        retry_on_error=[ConnectionError, TimeoutError])
    return Redis(connection_pool=pool)
