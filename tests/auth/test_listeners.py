"""auth's two listeners: the public port serves the auth API and the JWKS but no
metrics or readiness details; the internal listener serves those."""

from __future__ import annotations

import httpx
import pytest

from e2e.stack import LocalStack


async def test_the_public_port_has_no_metrics(stack: LocalStack) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{stack.auth_url}/metrics")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


async def test_the_public_readyz_names_no_dependency(stack: LocalStack) -> None:
    async with httpx.AsyncClient() as http:
        ready = await http.get(f"{stack.auth_url}/readyz")
        alive = await http.get(f"{stack.auth_url}/healthz")
        keys = await http.get(f"{stack.auth_url}/.well-known/jwks.json")
    assert ready.status_code == 200 and ready.json() == {"status": "ok"}
    assert alive.status_code == 200
    assert keys.status_code == 200 and keys.json()["keys"]


async def test_the_internal_listener_serves_metrics_and_readiness_details(
        stack: LocalStack) -> None:
    internal = stack.auth_internal_url
    async with httpx.AsyncClient() as http:
        # a request on the public port is counted in the internal listener's metrics
        await http.get(f"{stack.auth_url}/.well-known/jwks.json")
        metrics = await http.get(f"{internal}/metrics")
        ready = await http.get(f"{internal}/readyz")
        alive = await http.get(f"{internal}/healthz")
    assert 'route="/.well-known/jwks.json",service="auth"' in metrics.text
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"postgres": {"status": "ok"},
                                                       "redis": {"status": "ok"}}}
    assert alive.status_code == 200


@pytest.mark.parametrize("path", ["/.well-known/jwks.json", "/docs", "/openapi.json"])
async def test_the_internal_listener_serves_nothing_public(stack: LocalStack,
                                                           path: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{stack.auth_internal_url}{path}")
    assert response.status_code == 404
