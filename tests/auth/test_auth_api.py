"""The auth service's calls against the running stack, and what the backend accepts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest

from e2e.client import ApiError, ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email
from tests.waiting import refused_within


@pytest.fixture
async def client(target: Target) -> AsyncIterator[ChatClient]:
    async with ChatClient(target.auth_url, target.backend_url) as user:
        yield user


async def test_register_and_login(client: ChatClient) -> None:
    email = unique_email("Reg").upper()
    body = await client.register(email, PASSWORD, "Ada")
    user = body["user"]
    assert user["email"] == email.lower() and user["id"].startswith("usr_")
    assert set(user) == {"id", "email", "display_name", "created_at"}
    login = await client.login(email.lower(), PASSWORD)
    assert login["token_type"] == "Bearer" and 0 < login["expires_in"] <= 900
    assert login["user"]["id"] == user["id"]
    me = await client._call("GET", f"{client.auth_url}/auth/me")
    assert me["user"]["id"] == user["id"]


async def test_access_token_claims_and_jwks(client: ChatClient, target: Target) -> None:
    await client.signup(unique_email("claims"), PASSWORD)
    assert client.access_token is not None
    header = jwt.get_unverified_header(client.access_token)
    claims = jwt.decode(client.access_token, options={"verify_signature": False})
    assert header["alg"] == "EdDSA" and header["kid"]
    assert set(claims) == {"iss", "aud", "sub", "sid", "jti", "iat", "exp"}
    assert claims["exp"] - claims["iat"] <= 900 and claims["sid"].startswith("ses_")
    async with httpx.AsyncClient() as http:
        jwks = (await http.get(f"{target.auth_url}/.well-known/jwks.json")).json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and "d" not in key
    jwt.decode(client.access_token, jwt.PyJWK(key).key, algorithms=["EdDSA"],
               audience=claims["aud"], issuer=claims["iss"])


async def test_duplicate_email(client: ChatClient) -> None:
    email = unique_email("dup")
    await client.register(email, PASSWORD)
    with pytest.raises(ApiError) as caught:
        await client.register(email.upper(), PASSWORD)
    assert caught.value.status == 409 and caught.value.code == "email_taken"


@pytest.mark.parametrize(("email", "password", "code"), [
    ("not-an-email", PASSWORD, "validation_error"),
    ("short@example.com", "short", "validation_error"),
    ("same.as.email@example.com", "same.as.email@example.com", "weak_password"),
    ("common@example.com", "Password123", "weak_password"),
])
async def test_weak_registrations(client: ChatClient, email: str, password: str,
                                  code: str) -> None:
    with pytest.raises(ApiError) as caught:
        await client.register(email, password)
    assert caught.value.status == 422 and caught.value.code == code


async def test_login_does_not_reveal_whether_an_email_exists(client: ChatClient) -> None:
    email = unique_email("exists")
    await client.register(email, PASSWORD)
    answers = []
    for attempt in (email, unique_email("ghost")):
        with pytest.raises(ApiError) as caught:
            await client.login(attempt, "wrong password 123")
        answers.append((caught.value.status, caught.value.body["code"],
                        caught.value.body["detail"]))
    assert answers[0] == answers[1] == (401, "invalid_credentials", "email or password is wrong")


async def test_refresh_rotates_and_reuse_revokes_the_session(client: ChatClient) -> None:
    await client.signup(unique_email("refresh"), PASSWORD)
    first = client.refresh_token
    url = f"{client.auth_url}/auth/refresh"

    async def refresh(token: str | None) -> dict[str, str]:
        pair: dict[str, str] = await client._call("POST", url, auth=False,
                                                  json={"refresh_token": token})
        return pair

    lost = await refresh(first)
    assert lost["refresh_token"] != first and lost["access_token"]
    # the client never got `lost` (a network error) and retries at once: grace
    retried = await refresh(first)
    assert retried["refresh_token"] not in (first, lost["refresh_token"])
    current = await refresh(retried["refresh_token"])
    # now the first token's successor has been used: presenting it again is theft
    with pytest.raises(ApiError) as caught:
        await refresh(first)
    assert caught.value.code == "refresh_token_reused"
    for token in (current["refresh_token"], lost["refresh_token"]):  # the session is revoked
        with pytest.raises(ApiError) as caught:
            await refresh(token)
        assert caught.value.code == "invalid_refresh_token"


async def test_logout_stops_the_access_token_at_the_backend(client: ChatClient) -> None:
    await client.signup(unique_email("logout"), PASSWORD)
    await client.create_thread()
    await client._call("POST", f"{client.auth_url}/auth/logout", json={})
    assert await refused_within(client, 1.0) < 1.0


async def test_ws_ticket_needs_a_token(client: ChatClient) -> None:
    with pytest.raises(ApiError) as caught:
        await client.ws_ticket()
    assert caught.value.status == 401
    await client.signup(unique_email("ticket"), PASSWORD)
    tickets = await asyncio.gather(*(client.ws_ticket() for _ in range(3)))
    assert len(set(tickets)) == 3


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/auth/logout"), ("POST", "/auth/logout-all"), ("GET", "/auth/me"),
    ("GET", "/auth/sessions"), ("DELETE", "/auth/sessions/ses_x"), ("POST", "/auth/ws-ticket"),
])
async def test_bearer_calls_refuse_a_missing_or_bad_token(target: Target, method: str,
                                                          path: str) -> None:
    async with httpx.AsyncClient() as http:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            response = await http.request(method, f"{target.auth_url}{path}", headers=headers)
            assert response.status_code == 401
            assert response.json()["code"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
