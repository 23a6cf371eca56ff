"""Following the auth service's revocation announcements on one backend replica.

:class:`RevocationFollower` holds one pub/sub subscription to
:data:`~servicekit.revocation.REVOCATION_CHANNEL` and reconnects with backoff
when Redis drops. :class:`RevocationHandler` acts on what it hears: the
verifier forgets or refuses what was revoked, and the sockets it authenticated
are closed (4401, reason ``session_revoked``, whatever revoked it).

An announcement sent while the link was down is lost (pub/sub keeps nothing),
so every (re)subscription after the first is followed by a recheck of every
open socket: its session against the ``revoked:sid:`` marks, its key against a
freshly fetched JWKS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend.authorization import SESSION_REVOKED, revocation_reason
from backend.tokens import Principal, TokenVerifier
from servicekit.rediskeys import REVOCATION_CHANNEL
from servicekit.revocation import (
    Announcement,
    KeyRevoked,
    SessionsRevoked,
    parse_announcement,
)

__all__ = ["CLOSE_UNAUTHORIZED", "Revocable", "RevocationFollower", "RevocationHandler"]

log = logging.getLogger(__name__)
CLOSE_UNAUTHORIZED = 4401


class Revocable(Protocol):
    """An open socket as revocation sees it."""

    @property
    def principal(self) -> Principal: ...

    def end(self, code: int, reason: str) -> None: ...


class RevocationHandler:
    """Applies announcements to the verifier and to this replica's open sockets."""

    def __init__(self, verifier: TokenVerifier,
                 sockets: Callable[[], Iterable[Revocable]]) -> None:
        self._verifier = verifier
        self._sockets = sockets
        self._refetches: set[asyncio.Task[None]] = set()

    def apply(self, announcement: Announcement) -> int:
        """Act on one announcement; returns how many sockets it closed."""
        if isinstance(announcement, SessionsRevoked):
            self._verifier.forget(announcement.sids)
        elif isinstance(announcement, KeyRevoked):
            self._verifier.revoke_key(announcement.kid)
            self._refetch_keys()
        closed = 0
        for socket in list(self._sockets()):
            reason = revocation_reason(socket.principal, announcement)
            if reason is not None:
                socket.end(CLOSE_UNAUTHORIZED, reason)
                closed += 1
        return closed

    async def recheck(self) -> int:
        """After a gap in the announcements: check every open socket again."""
        self._verifier.forget_all()
        try:
            await self._verifier.refresh_keys()
            keys_fresh = True
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("JWKS refetch after a revocation gap failed: %s", exc)
            keys_fresh = False
        sockets = list(self._sockets())
        revoked = await self._verifier.revoked_among(s.principal.session_id for s in sockets)
        ended = [s for s in sockets if s.principal.session_id in revoked
                 or (keys_fresh and not self._verifier.has_key(s.principal.key_id))]
        for socket in ended:
            socket.end(CLOSE_UNAUTHORIZED, SESSION_REVOKED)
        return len(ended)

    def _refetch_keys(self) -> None:
        async def refetch() -> None:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                await self._verifier.refresh_keys()
        task = asyncio.create_task(refetch(), name="jwks-refetch")
        self._refetches.add(task)
        task.add_done_callback(self._refetches.discard)


class RevocationFollower:
    """One subscription to the revocation channel, kept up for the replica's life."""

    def __init__(self, redis: Redis, handler: RevocationHandler, *,
                 max_backoff_s: float = 2.0) -> None:
        self._redis = redis
        self._handler = handler
        self._max_backoff_s = max_backoff_s
        self._subscriptions = 0
        self.connected = False

    async def run(self) -> None:
        backoff = 0.05
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(REVOCATION_CHANNEL)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self._on_message(message)
                        backoff = 0.05
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning("revocation channel lost: %s", exc)
                self.connected = False
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    async def _on_message(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            # also after a reconnection the client library made by itself
            self.connected = True
            self._subscriptions += 1
            if self._subscriptions > 1:
                closed = await self._handler.recheck()
                log.info("revocation channel back: rechecked sockets, closed %d", closed)
        elif kind == "message":
            data = message.get("data")
            try:
                announcement = parse_announcement(data if isinstance(data, str | bytes) else "")
            except ValueError as exc:
                log.error("ignoring a malformed revocation announcement: %s", exc)
                return
            closed = self._handler.apply(announcement)
            log.info("revocation %s: closed %d sockets", announcement, closed)
