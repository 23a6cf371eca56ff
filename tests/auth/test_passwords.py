"""Argon2id at OWASP's minimum or stronger, re-hashed at login when the parameters
change, and a login that costs the same whether the email exists or not."""

from __future__ import annotations

import statistics
import time

import asyncpg
import pytest

from auth.config import AuthSettings
from auth.passwords import Passwords
from e2e.client import ApiError, ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email
from e2e.stack import LocalStack


async def _stored_hash(stack: LocalStack, email: str) -> str:
    conn = await asyncpg.connect(stack.database_url)
    try:
        value: str = await conn.fetchval(
            "SELECT password_hash FROM auth.users WHERE email = $1", email)
        return value
    finally:
        await conn.close()


async def test_passwords_are_stored_as_argon2id(stack: LocalStack, target: Target) -> None:
    email = unique_email("argon")
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.register(email, PASSWORD)
    stored = await _stored_hash(stack, email)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in stored


async def test_a_stronger_setting_rehashes_at_login() -> None:
    weak = Passwords(AuthSettings())
    strong = Passwords(AuthSettings(argon2_time_cost=3))
    old = await weak.hash(PASSWORD)
    assert strong.needs_rehash(old) and not weak.needs_rehash(old)
    assert await strong.verify(old, PASSWORD)  # old hashes still verify after the change
    assert "t=3" in await strong.hash(PASSWORD)


def test_settings_refuse_weaker_argon2() -> None:
    with pytest.raises(ValueError):
        AuthSettings(argon2_memory_kib=4096)


async def _login_seconds(client: ChatClient, email: str) -> float:
    started = time.perf_counter()
    with pytest.raises(ApiError):
        await client._call("POST", f"{client.auth_url}/auth/login", auth=False,
                           json={"email": email, "password": "not the password"},
                           headers={"X-Forwarded-For": f"198.18.0.{hash(email) % 200}"})
    return time.perf_counter() - started


async def test_unknown_email_costs_a_hash_too(target: Target) -> None:
    """Both paths run Argon2id: the unknown-email path is not an order of magnitude
    faster (without the dummy hash it would be ~50x faster)."""
    known = unique_email("timing")
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.register(known, PASSWORD)
        known_times = [await _login_seconds(client, known) for _ in range(3)]
        unknown_times = [await _login_seconds(client, unique_email("nobody"))
                         for _ in range(3)]
    assert statistics.median(unknown_times) > statistics.median(known_times) / 4
