"""Forged and stale tokens are refused by the backend (offline verification), over
HTTP and on the WebSocket (first message and renewal), and so are forged, expired
and revoked tickets."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email
from e2e.stack import LocalStack
from servicekit.redisclient import make_redis
from servicekit.rediskeys import ws_ticket_key


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _segment(data: dict[str, Any]) -> str:
    return _b64(json.dumps(data).encode())


@pytest.fixture(scope="module")
async def session(target: Target) -> dict[str, Any]:
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email("forge"), PASSWORD)
        assert client.access_token is not None
        return {"token": client.access_token, "refresh": client.refresh_token,
                "header": jwt.get_unverified_header(client.access_token),
                "claims": jwt.decode(client.access_token, options={"verify_signature": False})}


def _signing_key(stack: LocalStack, kid: str) -> Ed25519PrivateKey:
    pem = (Path(stack.root) / "keys" / f"{kid}.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def _resign(stack: LocalStack, session: dict[str, Any], **changes: Any) -> str:
    claims = {**session["claims"], **changes}
    kid = session["header"]["kid"]
    return jwt.encode(claims, _signing_key(stack, kid), algorithm="EdDSA", headers={"kid": kid})


def _tampered(session: dict[str, Any]) -> str:
    header, _, signature = session["token"].split(".")
    return ".".join([header, _segment({**session["claims"], "sub": "usr_someone_else"}),
                     signature])


def _hs256_with_public_key(stack: LocalStack, session: dict[str, Any]) -> str:
    public = _signing_key(stack, session["header"]["kid"]).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": session["header"]["kid"]}
    signing_input = f"{_segment(header)}.{_segment(session['claims'])}"
    signature = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


FORGERIES: dict[str, Callable[[LocalStack, dict[str, Any]], str]] = {
    "alg none": lambda _, s: (f"{_segment({'alg': 'none', 'kid': s['header']['kid']})}."
                              f"{_segment(s['claims'])}."),
    "hs256 signed with the public key": _hs256_with_public_key,
    "wrong aud": lambda st, s: _resign(st, s, aud="someone-else"),
    "wrong iss": lambda st, s: _resign(st, s, iss="https://evil.example"),
    "expired": lambda st, s: _resign(st, s, iat=int(time.time()) - 1000,
                                     exp=int(time.time()) - 60),
    "tampered payload": lambda _, s: _tampered(s),
    "unknown kid": lambda _, s: jwt.encode(s["claims"], Ed25519PrivateKey.generate(),
                                           algorithm="EdDSA", headers={"kid": "key_unknown"}),
    "own key, unknown kid": lambda st, s: jwt.encode(
        s["claims"], _signing_key(st, s["header"]["kid"]), algorithm="EdDSA",
        headers={"kid": "key_unknown"}),
    "missing sid": lambda st, s: _resign(st, {**s, "claims": {
        k: v for k, v in s["claims"].items() if k != "sid"}}),
    "refresh token as access token": lambda _, s: s["refresh"],
}


async def _status(target: Target, token: str) -> int:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{target.backend_url}/api/threads",
                                  headers={"Authorization": f"Bearer {token}"})
    return response.status_code


async def test_the_genuine_token_works(target: Target, session: dict[str, Any]) -> None:
    assert await _status(target, session["token"]) == 200


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
async def test_forgeries_are_refused(target: Target, stack: LocalStack,
                                     session: dict[str, Any], forgery: str) -> None:
    token = FORGERIES[forgery](stack, session)
    assert token != session["token"]
    assert await _status(target, token) == 401


async def _socket_closed(target: Target, auth: dict[str, Any]) -> tuple[int | None, str]:
    """Close code and reason of a socket whose first message is ``auth``."""
    ws = await connect(target.ws_url)
    with contextlib.suppress(ConnectionClosed):
        await ws.send(json.dumps(auth))
        async for _ in ws:
            pass
    return ws.close_code, ws.close_reason or ""


async def test_the_genuine_token_opens_a_socket(target: Target,
                                                session: dict[str, Any]) -> None:
    async with ChatClient(target.auth_url, target.backend_url) as client:
        client.access_token = session["token"]
        socket = await client.connect(target.ws_url, use_ticket=False)
        assert socket.welcome["expires_at"] == session["claims"]["exp"]
        await socket.close()


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
async def test_forgeries_are_refused_on_the_socket(target: Target, stack: LocalStack,
                                                   session: dict[str, Any],
                                                   forgery: str) -> None:
    token = FORGERIES[forgery](stack, session)
    code, _ = await _socket_closed(target, {"type": "auth", "token": token})
    assert code == 4401


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
async def test_forgeries_do_not_renew_a_socket(target: Target, stack: LocalStack,
                                               session: dict[str, Any], forgery: str) -> None:
    async with ChatClient(target.auth_url, target.backend_url) as client:
        client.access_token = session["token"]
        socket = await client.connect(target.ws_url, use_ticket=False)
        try:
            answer = await socket.request({"type": "reauth",
                                           "token": FORGERIES[forgery](stack, session)})
            assert answer["type"] == "error" and answer["code"] == "unauthorized"
            assert (await socket.request({"type": "ping"}))["type"] == "pong"
        finally:
            await socket.close()


def _ticket_data(session: dict[str, Any], **changes: Any) -> dict[str, Any]:
    claims = session["claims"]
    return {"user_id": claims["sub"], "sid": claims["sid"], "exp": claims["exp"],
            "kid": session["header"]["kid"], **changes}


TICKETS: dict[str, dict[str, Any] | None] = {
    "never issued": None,
    "its token expired": {"exp": int(time.time()) - 1},
    "no expiry": {"exp": None},
    "no key": {"kid": None},
}


@pytest.mark.parametrize("case", sorted(TICKETS))
async def test_forged_and_expired_tickets_are_refused(stack: LocalStack, target: Target,
                                                      session: dict[str, Any],
                                                      case: str) -> None:
    ticket = secrets.token_urlsafe(32)
    changes = TICKETS[case]
    if changes is not None:  # written where auth writes tickets, as auth would not
        redis = make_redis(stack.redis_url)
        try:
            await redis.set(ws_ticket_key(ticket), json.dumps(_ticket_data(session, **changes)),
                            ex=60)
        finally:
            await redis.aclose()
    code, _ = await _socket_closed(target, {"type": "auth", "ticket": ticket})
    assert code == 4401


async def test_tickets_and_tokens_of_a_revoked_session_are_refused(target: Target) -> None:
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email("revoked"), PASSWORD)
        ticket = await client.ws_ticket()
        token = client.access_token
        await client.logout()
        assert await _socket_closed(target, {"type": "auth", "ticket": ticket}) == (
            4401, "unauthorized: session revoked")
        assert await _socket_closed(target, {"type": "auth", "token": token}) == (
            4401, "unauthorized: session revoked")
