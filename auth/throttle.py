"""Throttling of logins and registrations: atomic reservations, growing delays, no lockout.

Each key (an account, an address) has a count of attempts over a window. An
attempt *reserves* its place before any password work: one Lua script, over all
the attempt's keys at once, answers how long to wait when any of them is
blocked, and otherwise counts the attempt in advance on every key. The first
``free_attempts`` attempts of a window go through at once; the reservation that
brings a key's count to ``free_attempts`` or beyond blocks the key for the next
attempt, for a delay that doubles up to ``max_delay_s`` (:func:`delay_after`). A
blocked key answers 429 with ``Retry-After``. Because the count is taken before
the work, N concurrent attempts let through at most ``free_attempts`` per key,
however many arrive in the same instant.

Logins (:class:`LoginThrottle`) count failures: a reservation *is* a failure
until the password proves right. A success clears the account's count (as
before) and gives the address its reservation back; when that leaves the address
under its free attempts, the block its in-flight reservations set is lifted.
Reservations of a login that never reached the password check (the Argon2id
pool was busy) are given back on both keys.

The address budget is larger than the account budget: one attacker address
hammering one account blocks that account (for a bounded time) and eventually
its own address, but not the other accounts used from a shared address until the
address budget is spent. Note that the address budget also bounds the logins of
one address *in flight* at once (each holds a reservation until it succeeds).

Registrations (:class:`RegisterThrottle`) count every attempt that reaches the
Argon2id hash, per address, with the same growing delay and no give-back on
success (an account created is what a farming script wants): by default 5 at
once, then one after 1 s, 2 s, 4 s … up to an hour, forgotten after an hour
without attempts. A person signing up needs one; a script gets about ten in the
first minute and a few an hour after that.

Nothing blocks for longer than ``max_delay_s``, and a count forgets after
``window_s`` without attempts, so nobody can be locked out for good.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from servicekit.rediskeys import throttle_account_key, throttle_address_key, throttle_register_key

__all__ = ["LoginThrottle", "RegisterThrottle", "ThrottlePolicy", "delay_after"]

# KEYS: the keys of one attempt; ARGV: now, then free, base, cap, window per key.
# Returns the seconds to wait (as a string: Lua numbers become integers) or "0"
# when the attempt is counted on every key.
_RESERVE_LUA = """
local now = tonumber(ARGV[1])
local wait = 0
for _, key in ipairs(KEYS) do
  local blocked = tonumber(redis.call('HGET', key, 'blocked_until') or '0')
  if blocked - now > wait then wait = blocked - now end
end
if wait > 0 then return tostring(wait) end
for i, key in ipairs(KEYS) do
  local at = 2 + (i - 1) * 4
  local free = tonumber(ARGV[at])
  local count = redis.call('HINCRBY', key, 'failures', 1)
  if count >= free then
    local delay = math.min(tonumber(ARGV[at + 1]) * 2 ^ (count - free), tonumber(ARGV[at + 2]))
    redis.call('HSET', key, 'blocked_until', now + delay)
  end
  redis.call('EXPIRE', key, ARGV[at + 3])
end
return '0'
"""

# KEYS[1]: a key; ARGV[1]: its free attempts. Gives one reservation back; a key
# left under its free attempts is no longer blocked.
_GIVE_BACK_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local count = redis.call('HINCRBY', KEYS[1], 'failures', -1)
if count <= 0 then
  redis.call('DEL', KEYS[1])
elseif count < tonumber(ARGV[1]) then
  redis.call('HDEL', KEYS[1], 'blocked_until')
end
return count
"""


@dataclass(frozen=True)
class ThrottlePolicy:
    free_attempts: int
    base_delay_s: float = 1.0
    max_delay_s: float = 900.0
    window_s: int = 900


def delay_after(failures: int, policy: ThrottlePolicy) -> float:
    """Seconds the ``failures``-th attempt of a window waits after the one before it
    (0 for the free ones); the reservation of attempt n blocks for ``delay_after(n + 1)``."""
    if failures <= policy.free_attempts:
        return 0.0
    return float(min(policy.base_delay_s * 2 ** (failures - policy.free_attempts - 1),
                     policy.max_delay_s))


class _Reservations:
    """The two scripts, over keys each with its policy."""

    def __init__(self, redis: Redis) -> None:
        self._reserve_script = redis.register_script(_RESERVE_LUA)
        self._give_back_script = redis.register_script(_GIVE_BACK_LUA)

    async def reserve(self, keys: Sequence[tuple[str, ThrottlePolicy]]) -> int:
        """Whole seconds to wait (nothing counted), or 0: the attempt is counted."""
        args: list[float | int] = [time.time()]
        for _, policy in keys:
            args += [policy.free_attempts, policy.base_delay_s, policy.max_delay_s,
                     policy.window_s]
        wait = float(await self._reserve_script(keys=[key for key, _ in keys], args=args))
        return math.ceil(wait) if wait > 0 else 0

    async def give_back(self, key: str, policy: ThrottlePolicy) -> None:
        await self._give_back_script(keys=[key], args=[policy.free_attempts])


class LoginThrottle:
    def __init__(self, redis: Redis, *, account: ThrottlePolicy, address: ThrottlePolicy) -> None:
        self._redis = redis
        self._reservations = _Reservations(redis)
        self._account, self._address = account, address

    @staticmethod
    def _keys(email: str, address: str) -> tuple[str, str]:
        digest = hashlib.sha256(email.encode()).hexdigest()[:32]
        return throttle_account_key(digest), throttle_address_key(address)

    async def reserve(self, email: str, address: str) -> int:
        """Whole seconds until a login attempt is allowed; 0: allowed, and counted as a
        failure until :meth:`succeeded` or :meth:`give_back`."""
        account, address_key = self._keys(email, address)
        return await self._reservations.reserve([(account, self._account),
                                                 (address_key, self._address)])

    async def succeeded(self, email: str, address: str) -> None:
        account, address_key = self._keys(email, address)
        await self._redis.delete(account)
        await self._reservations.give_back(address_key, self._address)

    async def give_back(self, email: str, address: str) -> None:
        """The attempt never reached the password check: it counts on neither key."""
        account, address_key = self._keys(email, address)
        await self._reservations.give_back(account, self._account)
        await self._reservations.give_back(address_key, self._address)


class RegisterThrottle:
    def __init__(self, redis: Redis, policy: ThrottlePolicy) -> None:
        self._reservations = _Reservations(redis)
        self._policy = policy

    @staticmethod
    def _key(address: str) -> str:
        return throttle_register_key(address)

    async def reserve(self, address: str) -> int:
        """Whole seconds until a registration from ``address`` is allowed; 0: allowed
        (and counted)."""
        return await self._reservations.reserve([(self._key(address), self._policy)])

    async def give_back(self, address: str) -> None:
        """The registration never reached the hash (the pool was busy)."""
        await self._reservations.give_back(self._key(address), self._policy)
