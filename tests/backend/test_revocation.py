"""The revocation follower against a real Redis: announcements close the sockets they
name, and a lost link is followed by a recheck of every open socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from redis.asyncio import Redis

from backend.revocation import RevocationFollower, RevocationHandler
from backend.tokens import Principal, TokenVerifier
from e2e.stack import free_port
from servicekit.rediskeys import revoked_session_key
from servicekit.revocation import KeyRevoked, SessionsRevoked, announce
from servicekit.tasks import cancel_and_wait


@dataclass
class Socket:
    principal: Principal
    closed: list[tuple[int, str]] = field(default_factory=list)

    def end(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))


def _socket(user: str, session: str, kid: str = "key_1") -> Socket:
    return Socket(Principal(user_id=user, session_id=session, expires_at=2**40, key_id=kid))


@pytest.fixture
async def verifier(redis: Redis) -> AsyncIterator[TokenVerifier]:
    # no auth service: a JWKS refetch fails, as it may in production
    async with httpx.AsyncClient(timeout=0.5) as http:
        yield TokenVerifier(http=http, redis=redis, issuer="i", audience="a",
                            jwks_url=f"http://127.0.0.1:{free_port()}/.well-known/jwks.json")


async def _until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(0.01)


def test_an_announcement_closes_the_sockets_it_names(verifier: TokenVerifier) -> None:
    sockets = [_socket("usr_a", "ses_1"), _socket("usr_a", "ses_2"),
               _socket("usr_b", "ses_3", kid="key_2")]
    handler = RevocationHandler(verifier, lambda: sockets)
    assert handler.apply(SessionsRevoked(("ses_1", "ses_9"))) == 1
    assert [s.closed for s in sockets] == [[(4401, "session_revoked")], [], []]


async def test_a_revoked_key_is_refused_and_its_sockets_closed(
        verifier: TokenVerifier) -> None:
    sockets = [_socket("usr_a", "ses_1"), _socket("usr_b", "ses_3", kid="key_2")]
    handler = RevocationHandler(verifier, lambda: sockets)
    assert handler.apply(KeyRevoked("key_2")) == 1
    assert [s.closed for s in sockets] == [[], [(4401, "session_revoked")]]
    assert not verifier.has_key("key_2")


async def test_the_follower_applies_announcements_and_rechecks_after_a_lost_link(
        redis: Redis, verifier: TokenVerifier) -> None:
    sockets = [_socket("usr_a", "ses_1"), _socket("usr_a", "ses_2"), _socket("usr_b", "ses_3")]
    follower = RevocationFollower(redis, RevocationHandler(verifier, lambda: sockets))
    task = asyncio.create_task(follower.run())
    try:
        await _until(lambda: follower.connected)
        await announce(redis, SessionsRevoked(("ses_1",)))
        await _until(lambda: sockets[0].closed)
        assert sockets[0].closed == [(4401, "session_revoked")]
        assert sockets[1].closed == sockets[2].closed == []
        # a revocation whose announcement is missed: only the mark is written...
        await redis.set(revoked_session_key("ses_3"), "1", ex=60)
        # ...and the link drops; once back, every open socket is checked again
        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await _until(lambda: sockets[2].closed)
        assert sockets[2].closed == [(4401, "session_revoked")]
        assert sockets[1].closed == []
        await announce(redis, SessionsRevoked(("ses_2",)))  # and it follows again
        await _until(lambda: sockets[1].closed)
    finally:
        await cancel_and_wait(task)


async def test_a_malformed_announcement_is_ignored(redis: Redis,
                                                  verifier: TokenVerifier) -> None:
    sockets = [_socket("usr_a", "ses_1")]
    follower = RevocationFollower(redis, RevocationHandler(verifier, lambda: sockets))
    task = asyncio.create_task(follower.run())
    try:
        await _until(lambda: follower.connected)
        await redis.publish("auth:revocations", "not json")
        await announce(redis, SessionsRevoked(("ses_1",)))
        await _until(lambda: sockets[0].closed)
    finally:
        await cancel_and_wait(task)
