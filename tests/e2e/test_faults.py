"""Readiness tells the truth: a dependency killed under a running stack shows as down,
and the stack recovers by itself when it returns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from e2e.client import ApiError, ChatClient
from e2e.scenarios import PASSWORD, Target, arithmetic_flow, unique_email
from e2e.stack import LocalStack, StackConfig
from tests.conftest import starts_servers


@pytest.fixture(scope="module")
@starts_servers
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(StackConfig.for_tests(tmp_path_factory.mktemp("faults"))) as stack:
        yield stack


def _wait_readyz(url: str, status: int, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/readyz", timeout=5.0)
        body = response.json()
        if response.status_code == status:
            return body
        time.sleep(0.2)
    raise AssertionError(f"{url}/readyz never answered {status}; last body {body}")


@pytest.mark.parametrize("dependency", ["redis", "postgres"])
def test_readyz_names_a_killed_dependency_and_recovers(
        fault_stack: LocalStack, dependency: str) -> None:
    # the internal listeners name each dependency; the public ports only say 503
    internal = [fault_stack.backend_internal_url(), fault_stack.auth_internal_url]
    public = [fault_stack.backend_url(), fault_stack.auth_url]
    for url in internal:
        assert _wait_readyz(url, 200)["status"] == "ok"
    fault_stack.kill(dependency)
    for url in internal:
        body = _wait_readyz(url, 503)
        assert body["checks"][dependency]["status"] == "error"
        assert all(check["status"] == "ok" for name, check in body["checks"].items()
                   if name != dependency)
    for url in public:
        assert _wait_readyz(url, 503) == {"status": "unavailable"}
    assert httpx.get(f"{fault_stack.backend_url()}/healthz").status_code == 200
    fault_stack.start_service(dependency)
    for url in [*internal, *public]:
        assert _wait_readyz(url, 200)["status"] == "ok"
    target = Target(fault_stack.auth_url, fault_stack.backend_url(), fault_stack.ws_url())
    result = asyncio.run(arithmetic_flow(target))
    assert result.failures == []


def test_a_request_while_postgres_is_down_gets_a_clear_503(fault_stack: LocalStack) -> None:
    fault_stack.kill("postgres")
    try:
        response = httpx.post(f"{fault_stack.auth_url}/auth/login",
                              json={"email": "a@example.com", "password": "whatever123"},
                              timeout=20.0)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "dependency_unavailable"
    finally:
        fault_stack.start_service("postgres")
    _wait_readyz(fault_stack.auth_url, 200)


def test_auth_down_existing_sessions_go_on(fault_stack: LocalStack) -> None:
    async def sign_in() -> ChatClient:
        client = ChatClient(fault_stack.auth_url, fault_stack.backend_url())
        await client.signup(unique_email("authdown"), PASSWORD)
        return client

    async def scenario() -> None:
        client = await sign_in()
        try:
            fault_stack.kill("auth")
            thread = await client.create_thread("while auth is down")  # offline verification
            run = await client.start_run(thread["id"], "what is 3 * 3")
            assert (await client.wait_run(run["id"]))["status"] == "succeeded"
            ready = _wait_readyz(fault_stack.backend_internal_url(), 200)
            assert ready["checks"]["auth_keys"] == {"status": "ok"}
            await fault_stack.astart_service("auth")
            await client.login(client.user["email"], PASSWORD)  # back to normal
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_redis_down_auth_answers_503_and_hangs_nowhere(fault_stack: LocalStack) -> None:
    async def scenario() -> None:
        async with ChatClient(fault_stack.auth_url, fault_stack.backend_url()) as client:
            await client.signup(unique_email("redisdown"), PASSWORD)
            fault_stack.kill("redis")
            try:
                started = time.monotonic()
                for call in (client.ws_ticket(), client.login(client.user["email"], PASSWORD)):
                    try:
                        await call
                    except ApiError as exc:
                        assert exc.status == 503 and exc.code == "dependency_unavailable"
                    else:
                        raise AssertionError("a call that needs Redis succeeded without it")
                assert time.monotonic() - started < 15
            finally:
                await fault_stack.astart_service("redis")
            _wait_readyz(fault_stack.auth_url, 200)
            assert await client.ws_ticket()

    asyncio.run(scenario())
