"""A per-user count in a fixed window, kept in Redis (usage records a minute).

The key sits under the user's hash tag (``u:{<user>}:``), which the compose
Redis ACL grants the backend and which keeps it on the user's Cluster slot.
"""

from __future__ import annotations

import math
import time

from redis.asyncio import Redis

from servicekit import ProblemError
from servicekit.rediskeys import UserKeys

__all__ = ["WindowQuota"]

#: KEYS[1] the window's counter; ARGV[1] amount, ARGV[2] limit, ARGV[3] window ms.
#: Adds the amount when it fits; returns 0, or the window's milliseconds left.
_TAKE_LUA = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if total == tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
if total > tonumber(ARGV[2]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then left = tonumber(ARGV[3]) end
  return left
end
return 0
"""


class WindowQuota:
    """At most ``limit`` units per user in each ``window_s`` window; a refused
    amount is not counted."""

    def __init__(self, redis: Redis, name: str, limit: int, window_s: int = 60, *,
                 unit: str = "units") -> None:
        self._take = redis.register_script(_TAKE_LUA)
        self._name = name
        self._unit = unit
        self._limit = limit
        self._window_s = window_s

    async def take(self, user_id: str, amount: int) -> None:
        """Count ``amount`` for the user, or raise 429 ``quota_exceeded`` with Retry-After."""
        window = int(time.time()) // self._window_s
        key = UserKeys(user_id).quota(self._name, window)
        left_ms = int(await self._take(keys=[key],
                                       args=[amount, self._limit, self._window_s * 1000]))
        if left_ms:
            raise ProblemError(
                429, "quota_exceeded",
                f"at most {self._limit} {self._unit} in {self._window_s} s",
                {"Retry-After": str(max(1, math.ceil(left_ms / 1000)))})
