"""The backend's two listeners: the public port serves neither the internal API nor
metrics nor readiness details; the internal listener serves them."""

from __future__ import annotations

import httpx
import pytest

from e2e.stack import LocalStack

DEPENDENCIES = {"postgres", "redis", "clickhouse", "auth_keys", "bridge"}


def _service_token(stack: LocalStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.internal_token}"}


@pytest.mark.parametrize("path", ["/internal/users/usr_x/messages?q=hello",
                                  "/internal/users/usr_x/usage", "/metrics"])
async def test_the_public_port_answers_404_even_with_the_service_token(
        stack: LocalStack, path: str) -> None:
    async with httpx.AsyncClient(headers=_service_token(stack)) as http:
        response = await http.get(f"{stack.backend_url()}{path}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


async def test_the_internal_listener_serves_the_internal_api(stack: LocalStack) -> None:
    url = f"{stack.backend_internal_url()}/internal/users/usr_x/messages"
    async with httpx.AsyncClient() as http:
        answer = await http.get(url, params={"q": "hello"}, headers=_service_token(stack))
        assert answer.status_code == 200
        assert answer.json() == {"items": []}
        refused = await http.get(url, params={"q": "hello"},
                                 headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"


async def test_the_internal_listener_serves_metrics(stack: LocalStack) -> None:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{stack.backend_internal_url()}/metrics")).text
    assert "http_requests_total" in text
    assert "bridge_state" in text and "ws_connections" in text


async def test_the_public_readyz_names_no_dependency(stack: LocalStack) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{stack.backend_url()}/readyz")
        alive = await http.get(f"{stack.backend_url()}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert not [name for name in DEPENDENCIES if name in response.text]
    assert alive.status_code == 200


async def test_the_internal_readyz_names_each_dependency(stack: LocalStack) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{stack.backend_internal_url()}/readyz")
        alive = await http.get(f"{stack.backend_internal_url()}/healthz")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "ok"
    assert set(body["checks"]) == DEPENDENCIES
    assert body["bridge"] == "ACTIVE" and isinstance(body["connections"], int)
    assert alive.status_code == 200


@pytest.mark.parametrize("path", ["/api/agents", "/docs", "/openapi.json", "/ws", "/"])
async def test_the_internal_listener_serves_nothing_public(stack: LocalStack,
                                                           path: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{stack.backend_internal_url()}{path}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
