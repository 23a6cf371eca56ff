"""Socket admission: a user's open sockets counted across every replica, in Redis.

Each user has a sorted set ``u:{<user>}:sockets`` of lease ids (one per open socket,
``<replica>/<ulid>``) scored by when the lease runs out, in Redis' own clock (no
replica's clock matters; the compose ACL grants the backend ``TIME`` for it). One
Lua script prunes the expired leases and admits or refuses in one step, so two
replicas admitting at once cannot both take the last place. Each replica renews
the leases of its live sockets every third of a lease and removes a lease when its
socket closes; the sockets of a replica that died stop counting when their leases
run out.

When Redis cannot be reached, admission falls back to this replica's own count
(the limit then holds per replica), as the gateway did before it counted in Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from redis.asyncio import Redis
from redis.exceptions import RedisError
from ulid import ULID

from servicekit.autopipeline import AutoPipeline
from servicekit.rediskeys import UserKeys

__all__ = ["SocketAdmission"]

log = logging.getLogger(__name__)

# KEYS[1] the user's leases; ARGV: lease ms, limit (0: renew, never refuse), lease id.
# 1 admitted (or renewed), 0 refused.
_LEASE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease_ms = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if limit > 0 and redis.call('ZSCORE', KEYS[1], ARGV[3]) == false
   and redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], now_ms + lease_ms, ARGV[3])
redis.call('PEXPIRE', KEYS[1], lease_ms)
return 1
"""


class SocketAdmission:
    """Admits a user's sockets up to ``limit`` across replicas; :meth:`run` keeps
    this replica's leases alive."""

    def __init__(self, redis: Redis, *, replica_id: str, limit: int, lease_s: float) -> None:
        self.redis = redis
        self.replica_id = replica_id
        self.limit = limit
        self.lease_ms = max(1000, int(lease_s * 1000))
        self._lease = redis.register_script(_LEASE)
        # renewals share round trips, and load the script on a node that lacks it (a
        # promoted replica of a Redis Cluster)
        self._auto = AutoPipeline(redis)
        self._live: defaultdict[str, set[str]] = defaultdict(set)  # user → lease ids here

    async def admit(self, user_id: str) -> str | None:
        """A lease id for a new socket of ``user_id``, or None: the user is at the limit."""
        lease = f"{self.replica_id}/{ULID()}"
        try:
            admitted = await self._lease(keys=[UserKeys(user_id).sockets],
                                         args=[self.lease_ms, self.limit, lease])
        except (RedisError, OSError) as exc:
            log.warning("socket admission falls back to this replica's count: %r", exc)
            admitted = len(self._live.get(user_id, ())) < self.limit
        if not admitted:
            return None
        self._live[user_id].add(lease)
        return lease

    async def release(self, user_id: str, lease: str) -> None:
        """The socket closed: its lease stops counting."""
        leases = self._live.get(user_id)
        if leases is not None:
            leases.discard(lease)
            if not leases:
                del self._live[user_id]
        try:
            await self.redis.zrem(UserKeys(user_id).sockets, lease)
        except (RedisError, OSError) as exc:  # it runs out on its own
            log.warning("could not remove lease %s: %r", lease, exc)

    async def renew(self) -> None:
        """Extend the leases of this replica's live sockets (adding them again after
        Redis lost them)."""
        snapshot = [(user, lease) for user, leases in self._live.items() for lease in leases]
        if not snapshot:
            return
        await asyncio.gather(*(self._auto.script(self._lease, [UserKeys(user).sockets],
                                                 [self.lease_ms, 0, lease])
                               for user, lease in snapshot))

    async def run(self) -> None:
        """Renew every third of a lease until cancelled."""
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                await self.renew()
            except (RedisError, OSError) as exc:
                log.warning("could not renew socket leases: %r", exc)
