"""Login throttling: 429 with Retry-After, growing delays, no lockout of bystanders.

The reservation script against a real Redis here; bursts and the per-address
budgets against an auth service of their own in ``test_burst.py``.
"""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis

from auth.throttle import LoginThrottle, RegisterThrottle, ThrottlePolicy, delay_after
from e2e.client import ApiError, ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email
from servicekit.rediskeys import throttle_address_key, throttle_register_key


def test_delays_grow_and_are_capped() -> None:
    policy = ThrottlePolicy(free_attempts=3, base_delay_s=1, max_delay_s=10)
    assert [delay_after(n, policy) for n in range(1, 9)] == [0, 0, 0, 1, 2, 4, 8, 10]


async def test_each_reservation_blocks_for_the_delay_of_the_next_attempt(redis: Redis) -> None:
    policy = ThrottlePolicy(free_attempts=3, base_delay_s=1, max_delay_s=10, window_s=60)
    throttle = RegisterThrottle(redis, policy)
    key = throttle_register_key("192.0.2.1")
    blocks = []
    for _ in range(8):
        assert await throttle.reserve("192.0.2.1") == 0
        until = await redis.hget(key, "blocked_until")
        blocks.append(0 if until is None else round(float(until) - time.time()))
        await redis.hdel(key, "blocked_until")  # as if the block had run out
    assert blocks == [delay_after(n + 1, policy) for n in range(1, 9)]
    assert 0 < await redis.ttl(key) <= 60


async def test_a_blocked_key_counts_nothing_and_says_how_long(redis: Redis) -> None:
    policy = ThrottlePolicy(free_attempts=2, base_delay_s=30, window_s=60)
    throttle = LoginThrottle(redis, account=policy, address=policy)
    assert [await throttle.reserve("a@example.com", "192.0.2.2") for _ in range(2)] == [0, 0]
    assert await throttle.reserve("a@example.com", "192.0.2.2") == 30
    assert await throttle.reserve("b@example.com", "192.0.2.2") == 30  # the address too
    keys = [key async for key in redis.scan_iter("throttle:*")]
    assert sorted([int(await redis.hget(k, "failures") or 0) for k in keys]) == [2, 2]


async def test_a_success_gives_the_address_its_reservation_back(redis: Redis) -> None:
    policy = ThrottlePolicy(free_attempts=2, base_delay_s=30, window_s=60)
    throttle = LoginThrottle(redis, account=policy, address=policy)
    for _ in range(2):  # two logins in flight: the second blocks both keys
        assert await throttle.reserve("c@example.com", "192.0.2.3") == 0
    await throttle.succeeded("c@example.com", "192.0.2.3")
    await throttle.give_back("c@example.com", "192.0.2.3")  # the other never checked
    assert await redis.exists(throttle_address_key("192.0.2.3")) == 0
    assert await throttle.reserve("c@example.com", "192.0.2.3") == 0  # nothing blocks


async def _login(client: ChatClient, email: str, password: str, address: str) -> int:
    try:
        await client._call("POST", f"{client.auth_url}/auth/login", auth=False,
                           json={"email": email, "password": password},
                           headers={"X-Forwarded-For": address})
    except ApiError as exc:
        if exc.status == 429:
            assert exc.code == "too_many_attempts"
        return exc.status
    return 200


async def test_an_attacked_account_is_throttled_not_its_neighbours(target: Target) -> None:
    victim, bystander = unique_email("victim"), unique_email("bystander")
    address = "198.51.100.7"
    async with ChatClient(target.auth_url, target.backend_url) as client:
        for email in (victim, bystander):
            await client.register(email, PASSWORD)
        statuses = [await _login(client, victim, "wrong password 1", address) for _ in range(5)]
        assert statuses == [401] * 5  # the free attempts; the fifth blocks the next
        response = await client.http.post(
            f"{target.auth_url}/auth/login", json={"email": victim, "password": PASSWORD},
            headers={"X-Forwarded-For": address})
        assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
        assert response.json()["code"] == "too_many_attempts"
        # the same address, another account: within the address budget, not blocked
        assert await _login(client, bystander, PASSWORD, address) == 200
        # the victim, from elsewhere, is throttled too (per account), for a bounded time
        assert await _login(client, victim, PASSWORD, "203.0.113.9") == 429


@pytest.mark.parametrize("unknown", [True, False])
async def test_unknown_and_known_emails_are_throttled_alike(target: Target,
                                                            unknown: bool) -> None:
    email = unique_email("alike")
    async with ChatClient(target.auth_url, target.backend_url) as client:
        if not unknown:
            await client.register(email, PASSWORD)
        statuses = [await _login(client, email, "wrong password 1", f"198.51.100.{80 + unknown}")
                    for _ in range(7)]
    assert statuses == [401] * 5 + [429] * 2
