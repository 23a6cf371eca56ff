"""Offline verification of access tokens against the auth service's JWKS.

Keys are fetched once and cached; an unknown ``kid`` triggers a refetch at most
every ``refetch_interval_s``. The algorithm list is pinned to EdDSA, and ``iss``,
``aud`` and ``exp`` are checked. A session revoked at the auth service carries a
mark in Redis; a session found not revoked is remembered for at most
``revocation_cache_s`` (0.5 s), so a revocation takes effect within that time
while most verifications cost no Redis round trip. The keys stay cached while
the auth service is down.

A token verified once is remembered (at most :data:`TOKENS_REMEMBERED`): used again,
its signature and claims are not checked again, but its expiry, its key's
revocation and its session's are, at every use. The EdDSA check was 9 % of a
busy backend's CPU, every request of a client repeating the same token.

The auth service also announces revocations (:mod:`servicekit.revocation`); the
backend's follower then calls :meth:`TokenVerifier.forget` (those sessions are
checked in Redis again at once) or :meth:`TokenVerifier.revoke_key` (the key is
refused from then on, even while a JWKS still lists it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
import jwt
from redis.asyncio import Redis

from servicekit.rediskeys import revoked_session_key, ws_ticket_key

__all__ = ["InvalidToken", "Principal", "TokenVerifier"]

log = logging.getLogger(__name__)
_ALGORITHMS = ["EdDSA"]
#: verified tokens a verifier remembers (about 12 MB at most)
TOKENS_REMEMBERED = 20_000


class InvalidToken(Exception):
    """The token is missing, malformed, forged, expired or revoked."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token or ticket authenticates, until when (``exp``, epoch seconds) and
    with which signing key (``kid``)."""

    user_id: str
    session_id: str
    expires_at: int
    key_id: str


class TokenVerifier:
    def __init__(self, *, http: httpx.AsyncClient, redis: Redis, jwks_url: str, issuer: str,
                 audience: str, refetch_interval_s: float = 10.0,
                 revocation_cache_s: float = 0.5, cache_size: int = 100_000) -> None:
        self._http = http
        self._redis = redis
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._audience = audience
        self._refetch_interval_s = refetch_interval_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._last_fetch = 0.0
        self._fetch_lock = asyncio.Lock()
        self._revocation_cache_s = revocation_cache_s
        self._cache_size = cache_size
        self._not_revoked_until: dict[str, float] = {}
        self._revoked_keys: set[str] = set()
        self._verified: dict[str, Principal] = {}  # token -> what it proved

    async def require_keys(self) -> None:
        """Readiness probe: fails until the JWKS has been loaded once."""
        if not self._keys:
            raise RuntimeError(f"no signing keys loaded yet from {self._jwks_url}")

    async def refresh_keys(self) -> None:
        async with self._fetch_lock:
            self._last_fetch = time.monotonic()
            response = await self._http.get(self._jwks_url)
            response.raise_for_status()
            keys: dict[str, jwt.PyJWK] = {}
            for data in response.json().get("keys", []):
                if data.get("kid") and data["kid"] not in self._revoked_keys:
                    try:
                        keys[data["kid"]] = jwt.PyJWK(data)
                    except jwt.PyJWTError:
                        log.warning("ignoring an unusable JWK %s", data.get("kid"))
            self._keys = keys

    def has_key(self, kid: str) -> bool:
        return kid in self._keys

    def revoke_key(self, kid: str) -> None:
        """Refuse ``kid`` from now on, whatever a JWKS fetched later says."""
        self._revoked_keys.add(kid)
        self._keys.pop(kid, None)

    def forget(self, session_ids: Iterable[str]) -> None:
        """Check these sessions in Redis again at their next use (announced revoked)."""
        for session_id in session_ids:
            self._not_revoked_until.pop(session_id, None)

    def forget_all(self) -> None:
        self._not_revoked_until.clear()

    async def revoked_among(self, session_ids: Iterable[str]) -> set[str]:
        """Which of these sessions carry a revocation mark (one round trip)."""
        ordered = list(dict.fromkeys(session_ids))
        if not ordered:
            return set()
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id in ordered:
                pipe.exists(revoked_session_key(session_id))
            marks = await pipe.execute()
        return {sid for sid, marked in zip(ordered, marks, strict=True) if marked}

    async def _key(self, kid: str) -> jwt.PyJWK:
        if kid in self._revoked_keys:
            raise InvalidToken("revoked signing key")
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._last_fetch >= self._refetch_interval_s:
            try:
                await self.refresh_keys()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("JWKS refetch failed: %s", exc)
            key = self._keys.get(kid)
        if key is None:
            raise InvalidToken("unknown signing key")
        return key

    async def verify(self, token: str) -> Principal:
        principal = self._verified.get(token)
        if principal is None or principal.expires_at <= time.time() \
                or principal.key_id not in self._keys:  # (a revoked key is not there)
            self._verified.pop(token, None)
            principal = await self._verify_signed(token)
            if len(self._verified) >= TOKENS_REMEMBERED:
                self._verified.clear()
            self._verified[token] = principal
        await self._check_not_revoked(principal.session_id)
        return principal

    async def _verify_signed(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        if header.get("alg") not in _ALGORITHMS or not isinstance(header.get("kid"), str):
            raise InvalidToken("unacceptable token header")
        key = await self._key(header["kid"])
        try:
            claims = jwt.decode(token, key.key, algorithms=_ALGORITHMS, issuer=self._issuer,
                                audience=self._audience,
                                options={"require": ["exp", "iat", "sub", "sid", "jti"]})
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        return Principal(user_id=claims["sub"], session_id=claims["sid"],
                         expires_at=int(claims["exp"]), key_id=header["kid"])

    async def _check_not_revoked(self, session_id: str) -> None:
        now = time.monotonic()
        if self._not_revoked_until.get(session_id, 0.0) > now:
            return
        if await self._redis.exists(revoked_session_key(session_id)):
            raise InvalidToken("session revoked")
        if len(self._not_revoked_until) >= self._cache_size:
            self._not_revoked_until.clear()
        self._not_revoked_until[session_id] = now + self._revocation_cache_s

    async def redeem_ticket(self, ticket: str) -> Principal:
        """Spend a single-use WebSocket ticket issued by the auth service."""
        raw = await self._redis.getdel(ws_ticket_key(ticket))
        if raw is None:
            raise InvalidToken("unknown, expired or spent ticket")
        data = json.loads(raw)
        if not isinstance(data.get("exp"), int) or not isinstance(data.get("kid"), str):
            raise InvalidToken("a ticket without the token's expiry and key")
        principal = Principal(user_id=data["user_id"], session_id=data["sid"],
                              expires_at=data["exp"], key_id=data["kid"])
        if principal.expires_at <= time.time():
            raise InvalidToken("the ticket's token has expired")
        if principal.key_id in self._revoked_keys:
            raise InvalidToken("revoked signing key")
        await self._check_not_revoked(principal.session_id)
        return principal

    async def keep_keys_fresh(self, *, every_s: float = 300.0) -> None:
        """Fetch the JWKS until it is loaded, then refresh it now and then.

        The backend starts and stays up while the auth service is down; tokens
        verify with the cached keys, and readiness reports while none are loaded.
        """
        delay = 0.2
        while True:
            try:
                await self.refresh_keys()
                delay = every_s
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("JWKS fetch from %s failed: %s", self._jwks_url, exc)
                delay = min(delay * 2, 5.0) if not self._keys else every_s
            await asyncio.sleep(delay)



