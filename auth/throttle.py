"""Login throttling: per account and per client address, growing delays, no lockout.

Each key (an account, an address) has a failure count over a window. The first
``free_attempts`` failures cost nothing; each further one blocks the key for a
delay that doubles up to ``max_delay_s``. A blocked key answers 429 with
``Retry-After`` without checking the password. Nothing blocks for longer than
``max_delay_s``, and the count forgets after ``window_s``, so an attacker cannot
lock a victim out for good; a success clears the account's count.

The address budget is larger than the account budget: one attacker address
hammering one account blocks that account (for a bounded time) and eventually
its own address, but not the other accounts used from a shared address until the
address budget is spent.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from redis.asyncio import Redis

__all__ = ["LoginThrottle", "ThrottlePolicy", "delay_after"]

_FAIL_LUA = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local free = tonumber(ARGV[1])
if failures > free then
  local delay = math.min(tonumber(ARGV[2]) * 2 ^ (failures - free - 1), tonumber(ARGV[3]))
  redis.call('HSET', KEYS[1], 'blocked_until', tonumber(ARGV[4]) + delay)
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return failures
"""


@dataclass(frozen=True)
class ThrottlePolicy:
    free_attempts: int
    base_delay_s: float = 1.0
    max_delay_s: float = 900.0
    window_s: int = 900


def delay_after(failures: int, policy: ThrottlePolicy) -> float:
    """Seconds a key is blocked after its ``failures``-th failure."""
    if failures <= policy.free_attempts:
        return 0.0
    return float(min(policy.base_delay_s * 2 ** (failures - policy.free_attempts - 1),
                     policy.max_delay_s))


class LoginThrottle:
    def __init__(self, redis: Redis, *, account: ThrottlePolicy, address: ThrottlePolicy) -> None:
        self._redis = redis
        self._fail = redis.register_script(_FAIL_LUA)
        self._policies = {"account": account, "address": address}

    @staticmethod
    def _keys(email: str, address: str) -> dict[str, str]:
        digest = hashlib.sha256(email.encode()).hexdigest()[:32]
        return {"account": f"throttle:account:{digest}", "address": f"throttle:address:{address}"}

    async def retry_after(self, email: str, address: str) -> int:
        """Whole seconds until a login attempt is allowed; 0 when it is allowed now."""
        keys = self._keys(email, address)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys.values():
                pipe.hget(key, "blocked_until")
            blocked = await pipe.execute()
        now = time.time()
        wait = max((float(b) - now for b in blocked if b is not None), default=0.0)
        return math.ceil(wait) if wait > 0 else 0

    async def failed(self, email: str, address: str) -> None:
        now = time.time()
        for kind, key in self._keys(email, address).items():
            policy = self._policies[kind]
            await self._fail(keys=[key], args=[policy.free_attempts, policy.base_delay_s,
                                               policy.max_delay_s, now, policy.window_s])

    async def succeeded(self, email: str, address: str) -> None:
        await self._redis.delete(self._keys(email, address)["account"])
