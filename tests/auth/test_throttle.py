"""Login throttling: 429 with Retry-After, growing delays, no lockout of bystanders."""

from __future__ import annotations

import pytest

from auth.throttle import ThrottlePolicy, delay_after
from e2e.client import ApiError, ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email


def test_delays_grow_and_are_capped() -> None:
    policy = ThrottlePolicy(free_attempts=3, base_delay_s=1, max_delay_s=10)
    assert [delay_after(n, policy) for n in range(1, 9)] == [0, 0, 0, 1, 2, 4, 8, 10]


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
        assert statuses == [401] * 5  # the free attempts
        assert await _login(client, victim, "wrong password 1", address) == 401  # 6th: blocks
        response = await client.http.post(
            f"{target.auth_url}/auth/login", json={"email": victim, "password": PASSWORD},
            headers={"X-Forwarded-For": address})
        assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
        assert response.json()["code"] == "too_many_attempts"
        # the same address, another account: within the address budget, not blocked
        assert await _login(client, bystander, PASSWORD, address) == 200
        # the victim, from elsewhere, is throttled too (per account), for a bounded time
        assert await _login(client, victim, PASSWORD, "203.0.113.9") == 429


async def test_an_address_over_its_budget_is_throttled(target: Target) -> None:
    address = "192.0.2.44"
    async with ChatClient(target.auth_url, target.backend_url) as client:
        statuses = [await _login(client, unique_email("spray"), "wrong password 1", address)
                    for _ in range(31)]
        assert statuses == [401] * 31  # password spraying: each account once
        assert await _login(client, unique_email("next"), "wrong password 1", address) == 429
        assert await _login(client, unique_email("next"), "wrong password 1",
                            "192.0.2.45") == 401


@pytest.mark.parametrize("unknown", [True, False])
async def test_unknown_and_known_emails_are_throttled_alike(target: Target,
                                                            unknown: bool) -> None:
    email = unique_email("alike")
    async with ChatClient(target.auth_url, target.backend_url) as client:
        if not unknown:
            await client.register(email, PASSWORD)
        statuses = [await _login(client, email, "wrong password 1", f"198.51.100.{80 + unknown}")
                    for _ in range(7)]
    assert statuses == [401] * 6 + [429]
