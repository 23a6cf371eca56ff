"""Sessions end everywhere at once: revocation reaches open sockets on every backend
replica within a second, and a socket's authorization expires with its token.

Two backends, one worker, access tokens living 15 s. Each figure printed is the
time from the revoking call (or the token's expiry) to the socket's close.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from e2e.checks import check_all
from e2e.client import ApiError, ChatClient, EventSocket
from e2e.scenarios import PASSWORD, unique_email
from e2e.stack import LocalStack, StackConfig
from tests.conftest import starts_servers
from tests.waiting import refused_within

TTL_S = 15
PROMISED_S = 1.0  # the contract's bound
ALLOWED_S = 2.0  # what the assertions allow on a loaded machine


@pytest.fixture(scope="module")
@starts_servers
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    config = StackConfig.for_tests(tmp_path_factory.mktemp("revocation"), backends=2,
                                   env={"AUTH_ACCESS_TOKEN_TTL_S": str(TTL_S)})
    with LocalStack(config) as stack:
        yield stack


async def _devices(stack: LocalStack, count: int) -> list[ChatClient]:
    """One user logged in ``count`` times: one session each."""
    email = unique_email("revoke")
    clients = [ChatClient(stack.auth_url, stack.backend_url(1)) for _ in range(count)]
    await clients[0].register(email, PASSWORD)
    for client in clients:
        await client.login(email, PASSWORD)
    return clients


async def _sockets(stack: LocalStack, client: ChatClient) -> list[EventSocket]:
    """A socket on each replica: by ticket on the first, by token on the second."""
    return [await client.connect(stack.ws_url(1)),
            await client.connect(stack.ws_url(2), use_ticket=False)]


async def _closed_after(sockets: list[EventSocket], started: float) -> list[float]:
    async def one(socket: EventSocket) -> float:
        await socket.wait_closed(timeout=10)
        return time.monotonic() - started
    return list(await asyncio.gather(*(one(s) for s in sockets)))


def _report(what: str, seconds: list[float]) -> None:
    print(f"\n{what}: sockets closed after " + ", ".join(f"{s * 1000:.0f} ms" for s in seconds))


async def _still_open(sockets: list[EventSocket]) -> None:
    for socket in sockets:
        assert (await socket.request({"type": "ping"}))["type"] == "pong"


async def _close(clients: list[ChatClient], sockets: list[EventSocket]) -> None:
    for socket in sockets:
        await socket.close()
    for client in clients:
        await client.aclose()


async def test_logout_closes_the_sessions_sockets_on_every_replica(
        replicas: LocalStack) -> None:
    leaving, staying = await _devices(replicas, 2)
    doomed, kept = await _sockets(replicas, leaving), await _sockets(replicas, staying)
    try:
        started = time.monotonic()
        await leaving.logout()
        seconds = await _closed_after(doomed, started)
        _report("logout", seconds)
        assert max(seconds) < ALLOWED_S
        assert [(s.close_code, s.close_reason) for s in doomed] == [
            (4401, "session_revoked")] * 2
        await _still_open(kept)  # the same user's other session goes on
    finally:
        await _close([leaving, staying], doomed + kept)


async def test_logout_all_closes_every_session_of_the_user(replicas: LocalStack) -> None:
    clients = await _devices(replicas, 2)
    async with ChatClient(replicas.auth_url, replicas.backend_url(2)) as bystander:
        await bystander.signup(unique_email("bystander"), PASSWORD)
        sockets = [s for c in clients for s in await _sockets(replicas, c)]
        unrelated = await _sockets(replicas, bystander)
        try:
            started = time.monotonic()
            await clients[0].logout_all()
            seconds = await _closed_after(sockets, started)
            _report("logout-all", seconds)
            assert max(seconds) < ALLOWED_S
            assert {(s.close_code, s.close_reason) for s in sockets} == {
                (4401, "session_revoked")}
            await _still_open(unrelated)
        finally:
            await _close(clients, sockets + unrelated)


async def test_deleting_a_session_closes_its_sockets(replicas: LocalStack) -> None:
    deleting, deleted = await _devices(replicas, 2)
    kept, doomed = await _sockets(replicas, deleting), await _sockets(replicas, deleted)
    try:
        victim = next(s for s in await deleting.sessions() if not s["current"])
        started = time.monotonic()
        await deleting.delete_session(victim["id"])
        seconds = await _closed_after(doomed, started)
        _report("session deletion", seconds)
        assert max(seconds) < ALLOWED_S
        assert {s.close_reason for s in doomed} == {"session_revoked"}
        await _still_open(kept)
    finally:
        await _close([deleting, deleted], kept + doomed)


async def test_refresh_token_reuse_kills_the_session_at_once(replicas: LocalStack) -> None:
    victim, other = await _devices(replicas, 2)
    stolen = victim.refresh_token
    await victim.refresh()
    await victim.refresh()  # the successor was used: presenting `stolen` is reuse
    doomed, kept = await _sockets(replicas, victim), await _sockets(replicas, other)
    on_second = ChatClient(replicas.auth_url, replicas.backend_url(2))
    on_second.access_token = victim.access_token
    try:
        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            await victim._call("POST", f"{victim.auth_url}/auth/refresh", auth=False,
                               json={"refresh_token": stolen})
        assert caught.value.code == "refresh_token_reused"
        seconds = await _closed_after(doomed, started)
        _report("refresh-token reuse", seconds)
        assert max(seconds) < ALLOWED_S
        assert {s.close_reason for s in doomed} == {"session_revoked"}
        # its last access token, which nothing else revoked, is refused everywhere
        for client in (victim, on_second):
            assert await refused_within(client, PROMISED_S) < ALLOWED_S
        assert await refused_within(victim, PROMISED_S, by="auth") < ALLOWED_S
        await _still_open(kept)
        assert (await other._call("GET", f"{other.auth_url}/auth/me"))["user"]
    finally:
        await _close([victim, other, on_second], doomed + kept)


async def test_a_socket_expires_with_its_token_unless_renewed(replicas: LocalStack) -> None:
    """One socket is never renewed: it closes with 4401 token_expired, and the client
    reconnects (on the other replica) and resumes without losing an event. Another
    socket of the same session renews itself halfway and stays open."""
    (client,) = await _devices(replicas, 1)
    expiring = await client.connect(replicas.ws_url(1))
    renewing = await client.connect(replicas.ws_url(2))
    resumed: EventSocket | None = None
    try:
        expires_at = expiring.welcome["expires_at"]
        thread = await client.create_thread()
        run = await client.start_run(thread["id"], "ticks 200 every 100ms", agent="ticker")
        await asyncio.sleep(max(0.0, expires_at - time.time()) / 2)
        await client.refresh()
        answer = await renewing.request({"type": "reauth", "token": client.access_token})
        assert answer["type"] == "reauthed" and answer["expires_at"] > expires_at
        await expiring.wait_closed(timeout=TTL_S + 5)
        late = time.time() - expires_at
        print(f"\nexpiry: the unrenewed socket closed {late * 1000:.0f} ms after exp")
        assert (expiring.close_code, expiring.close_reason) == (4401, "token_expired")
        assert -1.0 < late < ALLOWED_S
        await client.refresh()  # a second renewal: the run outlasts the first one's token
        answer = await renewing.request({"type": "reauth", "ticket": await client.ws_ticket()})
        assert answer["type"] == "reauthed"
        seen = expiring.events
        resumed = await client.connect(replicas.ws_url(2), resume={
            "after": seen[-1]["seq"], "epoch": expiring.welcome["epoch"]})
        await resumed.wait_terminal(run["id"], timeout=40)
        events = seen + resumed.events
        assert check_all(events, {run["id"]}, client.user["id"], first=1) == []
        assert len(events) == 203
        await renewing.wait_terminal(run["id"], timeout=10)
        assert time.time() > expires_at + 1 and renewing.close_code is None
        await _still_open([renewing])
    finally:
        await _close([client], [s for s in (expiring, renewing, resumed) if s is not None])


def _keys_cli(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    keys_dir = Path(stack.root) / "keys"
    return subprocess.run(
        [sys.executable, "-m", "auth.keys", *args, "--keys-dir", str(keys_dir)],
        capture_output=True, text=True, check=False,
        env={**os.environ, "AUTH_KEYS_DIR": str(keys_dir), "AUTH_REDIS_URL": stack.redis_url})


async def test_a_revoked_key_loses_its_tokens_and_sockets(replicas: LocalStack) -> None:
    """Last in this module: it withdraws the signing key every earlier test used."""
    holder, other = await _devices(replicas, 2)
    assert holder.access_token is not None
    kid = jwt.get_unverified_header(holder.access_token)["kid"]
    doomed = await _sockets(replicas, holder) + await _sockets(replicas, other)
    on_second = ChatClient(replicas.auth_url, replicas.backend_url(2))
    on_second.access_token = holder.access_token
    try:
        refused = await asyncio.to_thread(_keys_cli, replicas, "revoke", kid)
        assert refused.returncode == 1 and "current signing key" in refused.stderr
        await _still_open(doomed)
        began = time.monotonic()
        result = await asyncio.to_thread(_keys_cli, replicas, "revoke", "--rotate", kid)
        exited = time.monotonic()
        assert result.returncode == 0, result.stderr
        assert f"revoked {kid}" in result.stdout and "announced" in result.stdout
        seconds = await _closed_after(doomed, exited)
        _report(f"key revocation (the command ran {(exited - began) * 1000:.0f} ms; "
                f"after its exit)", seconds)
        assert max(seconds) < ALLOWED_S
        assert {(s.close_code, s.close_reason) for s in doomed} == {(4401, "session_revoked")}
        for client in (holder, on_second):
            assert await refused_within(client, PROMISED_S) < ALLOWED_S
        assert await refused_within(holder, PROMISED_S, by="auth") < ALLOWED_S
        async with httpx.AsyncClient() as http:
            jwks = (await http.get(f"{replicas.auth_url}/.well-known/jwks.json")).json()
        assert kid not in {key["kid"] for key in jwks["keys"]}
        # a new login is signed with the new current key, which every backend holds
        await holder.login(holder.user["email"], PASSWORD)
        assert jwt.get_unverified_header(holder.access_token)["kid"] != kid
        for replica in (1, 2):
            socket = await holder.connect(replicas.ws_url(replica))
            doomed.append(socket)
            await _still_open([socket])
    finally:
        await _close([holder, other, on_second], doomed)
