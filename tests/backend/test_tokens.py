"""Token verification against a real Redis, with tokens signed here: a token verified
once is not checked again, but its expiry, its key's revocation, its session's and
any change to it still are, at every use."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from backend.tokens import InvalidToken, TokenVerifier
from e2e.stack import free_port
from servicekit.rediskeys import revoked_session_key

KEY = Ed25519PrivateKey.generate()


def _token(*, ttl_s: float = 600, sid: str = "ses_1", kid: str = "key_1") -> str:
    now = int(time.time())
    return jwt.encode({"sub": "usr_1", "sid": sid, "jti": f"jti_{time.monotonic_ns()}",
                       "iat": now, "exp": now + ttl_s, "iss": "i", "aud": "a"},
                      KEY, algorithm="EdDSA", headers={"kid": kid})


@pytest.fixture
async def verifier(redis: Redis) -> AsyncIterator[TokenVerifier]:
    async with httpx.AsyncClient(timeout=0.5) as http:  # no auth service: no refetch
        found = TokenVerifier(http=http, redis=redis, issuer="i", audience="a",
                              jwks_url=f"http://127.0.0.1:{free_port()}/.well-known/jwks.json",
                              revocation_cache_s=0)
        public = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(KEY.public_key()))
        found._keys = {"key_1": jwt.PyJWK({**public, "kid": "key_1", "alg": "EdDSA"})}
        found._last_fetch = time.monotonic()
        yield found


async def test_a_token_used_again_is_not_checked_again(verifier: TokenVerifier,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    token = _token()
    first = await verifier.verify(token)
    calls: list[Any] = []
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: calls.append(a))
    assert [await verifier.verify(token) for _ in range(3)] == [first] * 3
    assert calls == []
    assert (first.user_id, first.session_id, first.key_id) == ("usr_1", "ses_1", "key_1")


async def test_a_changed_token_is_refused_though_its_original_was_verified(
        verifier: TokenVerifier) -> None:
    token = _token()
    await verifier.verify(token)
    head, body, signature = token.split(".")
    forged = ".".join((head, body, ("A" if signature[0] != "A" else "B") + signature[1:]))
    with pytest.raises(InvalidToken):
        await verifier.verify(forged)


async def test_a_verified_token_expires_all_the_same(verifier: TokenVerifier) -> None:
    token = _token(ttl_s=1)
    await verifier.verify(token)
    await asyncio.sleep(1.1)  # its exp is in whole seconds
    with pytest.raises(InvalidToken, match="expired"):
        await verifier.verify(token)


async def test_a_verified_token_of_a_revoked_key_or_session_is_refused(
        verifier: TokenVerifier, redis: Redis) -> None:
    key_token, session_token = _token(), _token(sid="ses_2")
    await verifier.verify(key_token)
    await verifier.verify(session_token)
    await redis.set(revoked_session_key("ses_2"), "1")
    with pytest.raises(InvalidToken, match="session revoked"):
        await verifier.verify(session_token)
    verifier.revoke_key("key_1")
    with pytest.raises(InvalidToken, match="revoked signing key"):
        await verifier.verify(key_token)
