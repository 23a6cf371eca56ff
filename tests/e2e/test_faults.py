"""Readiness tells the truth: a dependency killed under a running stack shows as down,
and the stack recovers by itself when it returns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from e2e.scenarios import Target, agent_flow
from e2e.stack import LocalStack, StackConfig


@pytest.fixture(scope="module")
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
    urls = [fault_stack.backend_url(), fault_stack.auth_url]
    for url in urls:
        assert _wait_readyz(url, 200)["status"] == "ok"
    fault_stack.kill(dependency)
    for url in urls:
        body = _wait_readyz(url, 503)
        assert body["checks"][dependency]["status"] == "error"
        assert all(check["status"] == "ok" for name, check in body["checks"].items()
                   if name != dependency)
    assert httpx.get(f"{fault_stack.backend_url()}/healthz").status_code == 200
    fault_stack.start_service(dependency)
    for url in urls:
        assert _wait_readyz(url, 200)["status"] == "ok"
    target = Target(fault_stack.auth_url, fault_stack.backend_url(), fault_stack.ws_url())
    result = asyncio.run(agent_flow(target))
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
