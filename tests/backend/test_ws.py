"""The WebSocket gateway against the running stack: auth, bad input, isolation, resume,
renewal (`reauth`) and revocation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from e2e.client import ChatClient, EventSocket
from e2e.scenarios import PASSWORD, Target, unique_email


@pytest.fixture
async def client(target: Target) -> AsyncIterator[ChatClient]:
    async with ChatClient(target.auth_url, target.backend_url) as user:
        await user.signup(unique_email("ws"), PASSWORD)
        yield user


async def _close_code(target: Target, first: str | None, origin: str | None = None) -> int:
    headers = {"Origin": origin} if origin else None
    ws = await connect(target.ws_url, additional_headers=headers)
    with contextlib.suppress(ConnectionClosed):
        if first is not None:
            await ws.send(first)
        async for _ in ws:
            pass
    await ws.close()
    assert ws.close_code is not None
    return ws.close_code


async def test_origin_not_allowed(target: Target, client: ChatClient) -> None:
    ticket = await client.ws_ticket()
    frame = json.dumps({"type": "auth", "ticket": ticket})
    assert await _close_code(target, frame, origin="https://evil.example") == 4403


@pytest.mark.parametrize("frame", [
    '{"type": "auth", "ticket": "forged"}',
    '{"type": "auth", "token": "not.a.jwt"}',
    '{"type": "ping"}',
    "not json",
])
async def test_bad_first_message_is_unauthorized(target: Target, frame: str) -> None:
    assert await _close_code(target, frame) == 4401


async def test_no_auth_in_time(target: Target) -> None:
    assert await _close_code(target, None) == 4408


async def test_a_ticket_works_once(target: Target, client: ChatClient) -> None:
    ticket = await client.ws_ticket()
    frame = json.dumps({"type": "auth", "ticket": ticket})
    socket = EventSocket(target.ws_url)
    await socket.open(json.loads(frame))
    assert socket.welcome["user_id"] == client.user["id"]
    await socket.close()
    assert await _close_code(target, frame) == 4401


async def test_token_auth_and_ping(target: Target, client: ChatClient) -> None:
    socket = await client.connect(target.ws_url, use_ticket=False)
    try:
        assert await socket.request({"type": "ping"}) == {"type": "pong", "request_id": "req-0"}
    finally:
        await socket.close()


@pytest.mark.parametrize(("frame", "code"), [
    ("{not json", "invalid_json"),
    ('{"type": "teleport"}', "unknown_type"),
    ('{"type": "resume", "after": "garbage"}', "invalid_message"),
    ('{"type": "start_run", "thread_id": "thr_nope", "input": "hi"}', "not_found"),
    ('{"type": "cancel_run", "run_id": "run_nope"}', "not_found"),
    ('{"type": "auth", "ticket": "again"}', "already_authenticated"),
    ('{"type": "start_run", "thread_id": "thr_x", "input": "nul \\u0000"}', "invalid_message"),
    ('{"type": "cancel_run", "run_id": "run_\\u0000"}', "invalid_message"),
])
async def test_bad_frames_get_an_error_and_the_socket_stays(
        target: Target, client: ChatClient, frame: str, code: str) -> None:
    socket = await client.connect(target.ws_url)
    try:
        await socket.send_raw(frame)
        error = await socket.wait_for(lambda f: f.get("type") == "error")
        assert error["code"] == code
        assert (await socket.request({"type": "ping"}))["type"] == "pong"
    finally:
        await socket.close()


async def test_an_oversized_frame_closes_with_1009(target: Target, client: ChatClient) -> None:
    socket = await client.connect(target.ws_url)
    await socket.send({"type": "ping", "request_id": "x" * 200_000})
    assert await socket.wait_closed() == 1009


async def test_another_users_thread_and_run_look_absent(target: Target,
                                                        client: ChatClient) -> None:
    async with ChatClient(target.auth_url, target.backend_url) as other:
        await other.signup(unique_email("other"), PASSWORD)
        thread = await other.create_thread("private")
        run = await other.start_run(thread["id"], "what is 2 + 2")
        socket = await client.connect(target.ws_url)
        try:
            for frame in ({"type": "start_run", "thread_id": thread["id"], "input": "x"},
                          {"type": "cancel_run", "run_id": run["id"]}):
                answer = await socket.request(frame)
                assert answer["type"] == "error" and answer["code"] == "not_found"
            await other.wait_run(run["id"])
            assert socket.events == []
        finally:
            await socket.close()


async def test_resume_replays_history_and_detects_a_lost_epoch(target: Target,
                                                               client: ChatClient) -> None:
    thread = await client.create_thread()
    live = await client.connect(target.ws_url)
    run_id = (await live.request({"type": "start_run", "thread_id": thread["id"],
                                  "input": "what is 6 * 7"}))["run_id"]
    await live.wait_terminal(run_id)
    await live.close()
    later = await client.connect(target.ws_url)
    try:
        epoch = later.welcome["epoch"]
        answer = await later.request({"type": "resume", "after": 0, "epoch": epoch})
        assert answer["type"] == "resumed"
        assert later.events == live.events
        stale = await later.request({"type": "resume", "after": 0, "epoch": "older"})
        assert stale == {"type": "resync_required", "epoch": epoch,
                         "last_seq": later.welcome["last_seq"], "request_id": "req-1"}
    finally:
        await later.close()


async def test_resume_in_the_auth_message_replays_before_any_live_event(
        target: Target, client: ChatClient) -> None:
    """The replay precedes live delivery by construction: a run streams while the
    second socket connects, and that socket sends nothing after its auth message."""
    thread = await client.create_thread()
    first = await client.connect(target.ws_url)
    try:
        run_id = (await first.request({"type": "start_run", "thread_id": thread["id"],
                                       "agent": "ticker",
                                       "input": "ticks 150 every 5 ms of 8 bytes"}))["run_id"]
        await first.wait_for(lambda f: f.get("type") == "partial_result")
        resumed = await client.connect(target.ws_url, resume={
            "after": 0, "epoch": first.welcome["epoch"]})
        try:
            await resumed.wait_terminal(run_id)
            kinds = [r.frame["type"] for r in resumed.frames]
            answer = next(r.frame for r in resumed.frames if r.frame["type"] == "resumed")
            before = kinds[:kinds.index("resumed")]
            seqs = [e["seq"] for e in resumed.events]
            assert seqs == list(range(1, seqs[-1] + 1))  # every event once, in order
            assert before[0] == "welcome" and len(before) - 1 == answer["last_seq"]
        finally:
            await resumed.close()
    finally:
        await first.close()


async def test_welcome_says_when_the_authorization_expires(target: Target,
                                                           client: ChatClient) -> None:
    assert client.access_token is not None
    exp = jwt.decode(client.access_token, options={"verify_signature": False})["exp"]
    for use_ticket in (True, False):
        socket = await client.connect(target.ws_url, use_ticket=use_ticket)
        try:
            assert socket.welcome["expires_at"] == exp
            assert 0 < socket.welcome["expires_in"] <= exp - time.time() + 1
        finally:
            await socket.close()


async def test_reauth_with_a_token_or_a_ticket_renews(target: Target,
                                                      client: ChatClient) -> None:
    socket = await client.connect(target.ws_url)
    try:
        await asyncio.sleep(1.1)  # a later token expires later
        await client.refresh()
        assert client.access_token is not None
        exp = jwt.decode(client.access_token, options={"verify_signature": False})["exp"]
        answer = await socket.request({"type": "reauth", "token": client.access_token})
        assert answer == {"type": "reauthed", "expires_at": exp,
                          "expires_in": answer["expires_in"], "request_id": "req-0"}
        assert answer["expires_at"] > socket.welcome["expires_at"]
        answer = await socket.request({"type": "reauth", "ticket": await client.ws_ticket()})
        assert answer["type"] == "reauthed" and answer["expires_at"] == exp
    finally:
        await socket.close()


@pytest.mark.parametrize("frame", [
    {"type": "reauth"},
    {"type": "reauth", "token": "not.a.jwt"},
    {"type": "reauth", "ticket": "forged"},
])
async def test_an_invalid_reauth_is_unauthorized_and_the_socket_stays(
        target: Target, client: ChatClient, frame: dict[str, str]) -> None:
    socket = await client.connect(target.ws_url)
    try:
        answer = await socket.request(frame)
        assert answer["type"] == "error" and answer["code"] == "unauthorized"
        assert (await socket.request({"type": "ping"}))["type"] == "pong"
    finally:
        await socket.close()


async def test_a_reauth_for_another_user_is_refused(target: Target, client: ChatClient) -> None:
    async with ChatClient(target.auth_url, target.backend_url) as other:
        await other.signup(unique_email("other"), PASSWORD)
        socket = await client.connect(target.ws_url)
        try:
            for frame in ({"type": "reauth", "token": other.access_token},
                          {"type": "reauth", "ticket": await other.ws_ticket()}):
                answer = await socket.request(frame)
                assert answer["type"] == "error" and answer["code"] == "unauthorized"
                assert "another user" in answer["message"]
            assert (await socket.request({"type": "ping"}))["type"] == "pong"
        finally:
            await socket.close()


async def test_logout_closes_the_sessions_socket(target: Target, client: ChatClient) -> None:
    socket = await client.connect(target.ws_url)
    await client.logout()
    assert await socket.wait_closed(timeout=5) == 4401
    assert socket.close_reason == "session_revoked"
