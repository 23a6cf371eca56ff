"""The auth service under a burst, over real HTTP with a real Redis: concurrent wrong
passwords are held to the free attempts (per account, per address), a registration
flood from one address is throttled, and a full Argon2id lane answers 503 busy
while logins keep answering.

Each module fixture starts Postgres, Redis and an auth service of its own with the
budgets under test (the shared stack lifts the per-address ones: every test
client has the same address).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2e.scenarios import PASSWORD, unique_email
from e2e.stack import LocalStack, StackConfig
from tests.conftest import starts_servers

ACCOUNT_FREE, ADDRESS_FREE, REGISTER_FREE = 5, 30, 3


def _auth_alone(root: Path, env: dict[str, str]) -> Iterator[LocalStack]:
    stack = LocalStack(StackConfig.for_tests(root, env=env))
    stack.start(only=("postgres", "redis", "auth"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
@starts_servers
def throttled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Production's throttle budgets (registration: 3), lanes too wide to fill."""
    yield from _auth_alone(tmp_path_factory.mktemp("burst"), {
        "AUTH_LOGIN_ACCOUNT_FREE_ATTEMPTS": str(ACCOUNT_FREE),
        "AUTH_LOGIN_ADDRESS_FREE_ATTEMPTS": str(ADDRESS_FREE),
        "AUTH_REGISTER_ADDRESS_FREE_ATTEMPTS": str(REGISTER_FREE),
        "AUTH_ARGON2_LOGIN_QUEUE": "1000", "AUTH_ARGON2_REGISTER_QUEUE": "1000"})


@pytest.fixture(scope="module")
@starts_servers
def narrow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Two Argon2id threads, lanes of 3 logins and 2 registrations."""
    yield from _auth_alone(tmp_path_factory.mktemp("narrow"), {
        "AUTH_ARGON2_THREADS": "2", "AUTH_ARGON2_LOGIN_QUEUE": "3",
        "AUTH_ARGON2_REGISTER_QUEUE": "2"})


async def _post(http: httpx.AsyncClient, url: str, body: dict[str, str],
                address: str) -> httpx.Response:
    return await http.post(url, json=body, headers={"X-Forwarded-For": address})


async def _register(http: httpx.AsyncClient, stack: LocalStack, email: str,
                    address: str = "192.0.2.250") -> httpx.Response:
    return await _post(http, f"{stack.auth_url}/auth/register",
                       {"email": email, "password": PASSWORD}, address)


async def _logins(http: httpx.AsyncClient, stack: LocalStack,
                  attempts: list[tuple[str, str]], address: str) -> list[httpx.Response]:
    return list(await asyncio.gather(*(
        _post(http, f"{stack.auth_url}/auth/login", {"email": email, "password": password},
              address) for email, password in attempts)))


def _problem(response: httpx.Response, status: int, code: str) -> bool:
    return (response.status_code == status and response.json()["code"] == code
            and response.headers["content-type"] == "application/problem+json"
            and int(response.headers["Retry-After"]) >= 1)


async def test_a_burst_against_one_account_gets_only_the_free_attempts(
        throttled: LocalStack) -> None:
    email = unique_email("burst")
    async with httpx.AsyncClient(timeout=60) as http:
        assert (await _register(http, throttled, email)).status_code == 201
        answers = await _logins(http, throttled, [(email, f"wrong password {n}")
                                                  for n in range(100)], "198.51.100.20")
        statuses = Counter(a.status_code for a in answers)
        assert set(statuses) <= {401, 429} and 1 <= statuses[401] <= ACCOUNT_FREE
        assert all(_problem(a, 429, "too_many_attempts") for a in answers
                   if a.status_code == 429)
        # the right password, from elsewhere, waits too: the account is blocked
        again = await _logins(http, throttled, [(email, PASSWORD)], "203.0.113.20")
        assert _problem(again[0], 429, "too_many_attempts")


async def test_a_burst_from_one_address_gets_only_its_free_attempts(
        throttled: LocalStack) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        answers = await _logins(http, throttled, [(unique_email("spray"), "wrong password 1")
                                                  for _ in range(100)], "198.51.100.21")
        statuses = Counter(a.status_code for a in answers)
        assert set(statuses) <= {401, 429} and 1 <= statuses[401] <= ADDRESS_FREE
        assert statuses[429] >= 100 - ADDRESS_FREE
        # another address is not concerned
        other = await _logins(http, throttled, [(unique_email("next"), "wrong password 1")],
                              "198.51.100.22")
        assert other[0].status_code == 401


async def test_an_address_spraying_accounts_in_turn_is_throttled(
        throttled: LocalStack) -> None:
    address = "192.0.2.44"
    async with httpx.AsyncClient(timeout=60) as http:
        statuses = [(await _logins(http, throttled, [(unique_email("spray"), "wrong 1")],
                                   address))[0].status_code for _ in range(ADDRESS_FREE + 1)]
    assert statuses == [401] * ADDRESS_FREE + [429]


async def test_successful_logins_give_the_address_its_budget_back(
        throttled: LocalStack) -> None:
    email = unique_email("often")
    async with httpx.AsyncClient(timeout=60) as http:
        assert (await _register(http, throttled, email, "192.0.2.251")).status_code == 201
        statuses = [(await _logins(http, throttled, [(email, PASSWORD)],
                                   "198.51.100.23"))[0].status_code
                    for _ in range(ADDRESS_FREE + 5)]
    assert statuses == [200] * (ADDRESS_FREE + 5)


async def test_a_registration_flood_from_one_address_is_throttled(
        throttled: LocalStack) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        answers = await asyncio.gather(*(
            _register(http, throttled, unique_email("farm"), "198.51.100.24")
            for _ in range(20)))
        statuses = Counter(a.status_code for a in answers)
        assert statuses == {201: REGISTER_FREE, 429: 20 - REGISTER_FREE}
        assert all(_problem(a, 429, "too_many_requests") for a in answers
                   if a.status_code == 429)
        # someone else still signs up
        assert (await _register(http, throttled, unique_email("person"),
                                "198.51.100.25")).status_code == 201


async def test_a_full_lane_answers_busy_with_retry_after(narrow: LocalStack) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        answers = await asyncio.gather(*(
            _post(http, f"{narrow.auth_url}/auth/login",
                  {"email": unique_email("crowd"), "password": "wrong password 1"},
                  f"198.51.100.{n}") for n in range(30)))
        statuses = Counter(a.status_code for a in answers)
        assert set(statuses) == {401, 503}
        assert all(_problem(a, 503, "busy") for a in answers if a.status_code == 503)


async def test_logins_answer_during_a_registration_flood(narrow: LocalStack) -> None:
    email = unique_email("steady")
    done = asyncio.Event()
    flooded: Counter[int] = Counter()
    async with httpx.AsyncClient(timeout=60) as http:
        assert (await _register(http, narrow, email)).status_code == 201

        async def flood() -> None:
            while not done.is_set():
                answers = await asyncio.gather(*(
                    _register(http, narrow, unique_email("flood"), f"192.0.2.{n}")
                    for n in range(50)))
                flooded.update(a.status_code for a in answers)

        flooding = asyncio.ensure_future(flood())
        await asyncio.sleep(0.1)
        logins = [(await _logins(http, narrow, [(email, PASSWORD)], "203.0.113.30"))[0]
                  for _ in range(5)]
        done.set()
        await flooding
    assert [login.status_code for login in logins] == [200] * 5
    assert flooded[503] > 0 and flooded[201] > 0  # the flood met its own budget
