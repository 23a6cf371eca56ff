"""Sessions: list, delete one, logout-all; revocation reaches the backend within 1 s."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from e2e.client import ApiError, ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email
from tests.waiting import refused_within


@pytest.fixture
async def devices(target: Target) -> AsyncIterator[list[ChatClient]]:
    """One user logged in on three devices."""
    email = unique_email("devices")
    clients = [ChatClient(target.auth_url, target.backend_url) for _ in range(3)]
    await clients[0].register(email, PASSWORD)
    for number, client in enumerate(clients):
        client.http.headers["User-Agent"] = f"device-{number}"
        await client.login(email, PASSWORD)
    yield clients
    for client in clients:
        await client.aclose()


async def _sessions(client: ChatClient) -> list[dict[str, object]]:
    sessions: list[dict[str, object]] = await client._call(
        "GET", f"{client.auth_url}/auth/sessions")
    return sessions


async def test_sessions_are_listed_with_the_current_one(devices: list[ChatClient]) -> None:
    sessions = await _sessions(devices[1])
    assert len(sessions) == 3
    assert {s["user_agent"] for s in sessions} == {"device-0", "device-1", "device-2"}
    current = [s for s in sessions if s["current"]]
    assert len(current) == 1 and current[0]["user_agent"] == "device-1"


async def test_deleting_a_session_stops_its_token_within_a_second(
        devices: list[ChatClient]) -> None:
    victim = next(s for s in await _sessions(devices[0]) if s["user_agent"] == "device-2")
    await devices[0]._call("DELETE", f"{devices[0].auth_url}/auth/sessions/{victim['id']}")
    assert await refused_within(devices[2], 1.0) < 1.0
    await devices[1].create_thread()  # the other sessions go on
    assert len(await _sessions(devices[0])) == 2
    with pytest.raises(ApiError) as caught:  # and its refresh token is dead
        await devices[2]._call("POST", f"{devices[2].auth_url}/auth/refresh", auth=False,
                               json={"refresh_token": devices[2].refresh_token})
    assert caught.value.code == "invalid_refresh_token"


async def test_another_users_session_cannot_be_deleted(devices: list[ChatClient],
                                                       target: Target) -> None:
    session_id = (await _sessions(devices[0]))[0]["id"]
    async with ChatClient(target.auth_url, target.backend_url) as other:
        await other.signup(unique_email("other"), PASSWORD)
        with pytest.raises(ApiError) as caught:
            await other._call("DELETE", f"{other.auth_url}/auth/sessions/{session_id}")
        assert caught.value.status == 404
    assert len(await _sessions(devices[0])) == 3


async def test_logout_all_revokes_every_session(devices: list[ChatClient]) -> None:
    await devices[0]._call("POST", f"{devices[0].auth_url}/auth/logout-all")
    for client in devices:
        assert await refused_within(client, 1.0) < 1.0
