"""Socket admission against real backends: unauthenticated sockets per address on one
replica; a user's sockets counted across two replicas, with leases that outlive
neither a live socket nor a killed replica by more than a lease."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from e2e.client import ChatClient, EventSocket
from e2e.scenarios import PASSWORD, Target, unique_email
from e2e.stack import LocalStack, StackConfig
from servicekit.redisclient import make_redis
from servicekit.rediskeys import UserKeys
from tests.conftest import starts_servers

LIMIT = 3
LEASE_S = 4.0
PER_ADDRESS = 20


@pytest.fixture(scope="module")
@starts_servers
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    config = StackConfig.for_tests(
        tmp_path_factory.mktemp("admission"), backends=2, workers=0,
        env={"BACKEND_WS_MAX_CONNECTIONS_PER_USER": str(LIMIT),
             "BACKEND_WS_MAX_UNAUTHENTICATED_PER_ADDRESS": str(PER_ADDRESS),
             "BACKEND_WS_CONNECTION_LEASE_S": str(LEASE_S)})
    with LocalStack(config) as stack:
        yield stack


@pytest.fixture
async def user(replicas: LocalStack) -> AsyncIterator[ChatClient]:
    async with ChatClient(replicas.auth_url, replicas.backend_url()) as client:
        await client.signup(unique_email("admission"), PASSWORD)
        yield client


async def _refusal(client: ChatClient, url: str) -> int | None:
    """The close code of a socket the server refuses after its auth message."""
    socket = EventSocket(url)
    with contextlib.suppress(ConnectionError):
        await socket.open({"type": "auth", "ticket": await client.ws_ticket()})
        await socket.close()
        raise AssertionError("the socket was admitted")
    return socket.close_code


async def _held(client: ChatClient, replicas: LocalStack) -> int:
    redis = make_redis(replicas.redis_url)
    try:
        assert client.user is not None
        return int(await redis.zcard(UserKeys(client.user["id"]).sockets))
    finally:
        await redis.aclose()


async def test_the_user_limit_holds_across_replicas_and_outlives_a_lease(
        replicas: LocalStack, user: ChatClient) -> None:
    sockets = [await user.connect(replicas.ws_url(n)) for n in (1, 2, 1)]
    try:
        assert await _held(user, replicas) == LIMIT
        for replica in (1, 2):
            assert await _refusal(user, replicas.ws_url(replica)) == 4409
        await asyncio.sleep(LEASE_S * 1.5)  # renewed: the live sockets still count
        assert await _refusal(user, replicas.ws_url(2)) == 4409
        await sockets.pop().close()  # a place is free again, on either replica
        await asyncio.sleep(0.2)
        sockets.append(await user.connect(replicas.ws_url(2)))
        assert await _refusal(user, replicas.ws_url(1)) == 4409
    finally:
        for socket in sockets:
            await socket.close()
    await asyncio.sleep(0.2)
    assert await _held(user, replicas) == 0


async def test_a_killed_replicas_sockets_stop_counting_after_the_lease(
        replicas: LocalStack, user: ChatClient) -> None:
    doomed = [await user.connect(replicas.ws_url(2)) for _ in range(2)]
    kept = await user.connect(replicas.ws_url(1))
    new: list[EventSocket] = []
    try:
        replicas.kill("backend-2")
        killed = time.monotonic()
        assert await _refusal(user, replicas.ws_url(1)) == 4409
        assert time.monotonic() - killed < LEASE_S  # the refusal came within the lease
        deadline = killed + LEASE_S + 5
        while not new:
            assert time.monotonic() < deadline
            try:
                new.append(await user.connect(replicas.ws_url(1)))
            except ConnectionError:
                await asyncio.sleep(0.25)
        waited = time.monotonic() - killed
        while len(new) < LIMIT - 1:
            new.append(await user.connect(replicas.ws_url(1)))
        assert await _held(user, replicas) == LIMIT
        print(f"\nthe killed replica's sockets stopped counting after {waited:.1f} s "
              f"(lease {LEASE_S} s)")
        assert await _refusal(user, replicas.ws_url(1)) == 4409
    finally:
        for socket in (*doomed, kept, *new):
            with contextlib.suppress(Exception):
                await socket.close()
        await replicas.astart_service("backend-2")


async def _unauthenticated(url: str) -> ClientConnection:
    return await connect(url)


async def _close_code(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(timeout):
            async for _ in ws:
                pass
    return ws.close_code


async def _refused_at_once(url: str) -> None:
    extra = await _unauthenticated(url)
    assert await _close_code(extra, timeout=2) == 1013
    assert extra.close_reason is not None
    assert "unauthenticated" in extra.close_reason


async def _stays_open(ws: ClientConnection) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.5):
            await ws.recv()
    assert ws.close_code is None


async def test_unauthenticated_sockets_per_address_are_capped(replicas: LocalStack) -> None:
    """Each held at most ``ws_auth_timeout_s`` (5 s): the test runs within that."""
    target = Target(replicas.auth_url, replicas.backend_url(), replicas.ws_url(1))
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email("waiting"), PASSWORD)
        tickets = [await client.ws_ticket() for _ in range(2)]
        waiting = [await _unauthenticated(target.ws_url) for _ in range(PER_ADDRESS)]
        try:
            await _refused_at_once(target.ws_url)
            # one of the waiting sockets authenticates: its place is free again
            first = waiting[0]
            await first.send(json.dumps({"type": "auth", "ticket": tickets[0]}))
            assert json.loads(await asyncio.wait_for(first.recv(), 5))["type"] == "welcome"
            waiting.append(await _unauthenticated(target.ws_url))
            await _stays_open(waiting[-1])
            await _refused_at_once(target.ws_url)
            # a waiting socket that closes frees its place too
            await waiting.pop(1).close()
            await asyncio.sleep(0.2)
            waiting.append(await _unauthenticated(target.ws_url))
            await _stays_open(waiting[-1])
            await _refused_at_once(target.ws_url)
            # the place of a socket that authenticates later is free at once
            await waiting[-1].send(json.dumps({"type": "auth", "ticket": tickets[1]}))
            assert json.loads(await asyncio.wait_for(waiting[-1].recv(), 5))["type"] == "welcome"
        finally:
            for ws in waiting:
                await ws.close()
