"""Property-based run of the WebSocket protocol against the running backend.

Frames are random JSON values, valid client messages (every type of
bridge.protocol, with a real thread, run and token) and mutations of them: a
field dropped, a field of the wrong type, huge or nested, an unknown field, a
``type`` that is not a string, non-objects, text that is not JSON, binary
frames. For every frame the server answers either the contract's error frame or
the valid reply of that message type, and the socket stays open: a ping after
it is answered. The one exception of the contract: a frame over the size limit
closes the socket with 1009 (the other close, 1008 for repeated abuse, takes
more invalid frames than one socket here is sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from backend.config import BackendSettings
from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email

MAX_FRAME = BackendSettings().ws_max_frame_bytes
#: the replies a valid message of each type gets (an error frame is always possible)
REPLIES = {"ping": {"pong"}, "resume": {"resumed", "resync_required"},
           "start_run": {"run_accepted"}, "cancel_run": {"cancel_accepted"},
           "reauth": {"reauthed"}, "auth": set()}
#: the codes of the contract and docs/protocol.md an error frame may carry here
ERROR_CODES = {"invalid_json", "invalid_message", "unknown_type", "already_authenticated",
               "unauthorized", "not_found", "thread_busy", "too_many_runs", "rate_limited",
               "unknown_agent", "invalid_text", "run_finished"}
ERROR_KEYS = {"type", "code", "message", "request_id", "retry_after_ms"}


@dataclass(frozen=True)
class Fixture:
    token: str
    thread_id: str
    run_id: str


@pytest.fixture(scope="module")
def user(target: Target) -> Iterator[Fixture]:
    async def prepare() -> Fixture:
        async with ChatClient(target.auth_url, target.backend_url) as client:
            await client.signup(unique_email("wsfuzz"), PASSWORD)
            thread = await client.create_thread("fuzz")
            run = await client.start_run(thread["id"], "ticks 1", agent="ticker")
            assert client.access_token is not None
            return Fixture(client.access_token, thread["id"], run["id"])

    yield asyncio.run(prepare())


def _templates(user: Fixture) -> list[dict[str, Any]]:
    """One valid frame of each client message type."""
    return [
        {"type": "ping", "request_id": "r1"},
        {"type": "resume", "after": 0, "epoch": "e", "request_id": "r2"},
        {"type": "start_run", "thread_id": user.thread_id, "input": "ticks 1",
         "agent": "ticker", "multitask": "enqueue", "request_id": "r3"},
        {"type": "cancel_run", "run_id": user.run_id, "request_id": "r4"},
        {"type": "reauth", "token": user.token, "request_id": "r5"},
        {"type": "auth", "token": user.token, "resume": {"after": 0}, "request_id": "r6"},
    ]


#: values at and past the edges of what a field takes
EDGE_INTS = [-1, 2**31, 2**63 - 2, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30]
EDGE_VALUES: list[Any] = [*EDGE_INTS, "", "x" * 65, "x" * 129, "x" * 9000, "x" * 40_000, "nul\0",
                          "\ud800", None, True, 1.5, {}, [], {"a": {"b": [1, {"c": None}]}}]
HUGE_SIZES = [10_000, 40_000, MAX_FRAME // 2, MAX_FRAME + 10_000, MAX_FRAME * 3]
scalars = (st.none() | st.booleans() | st.integers() | st.sampled_from(EDGE_INTS)
           | st.floats(allow_nan=False) | st.text(max_size=20)
           | st.sampled_from(HUGE_SIZES).map(lambda n: "x" * n))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


@st.composite
def frames(draw: st.DrawFn, templates: list[dict[str, Any]]) -> str | bytes:
    """One client frame: text (JSON or not) or binary."""
    kind = draw(st.sampled_from(["valid", "drop", "retype", "extra", "type", "value",
                                 "text", "binary"]))
    frame = dict(draw(st.sampled_from(templates)))
    if kind == "drop":
        del frame[draw(st.sampled_from(sorted(frame)))]
    elif kind == "retype":
        frame[draw(st.sampled_from(sorted(frame)))] = draw(json_values)
    elif kind == "extra":
        frame[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
    elif kind == "type":
        frame["type"] = draw(json_values)
    elif kind == "value":
        return json.dumps(draw(json_values))
    elif kind == "text":
        return draw(st.text(max_size=50) | st.sampled_from(["", "{", "[1,", "nul\0l", "{}{}"]))
    elif kind == "binary":
        return draw(st.binary(max_size=50) | st.just(b'{"type": "ping"}'))
    return json.dumps(frame)


async def _answer(ws: ClientConnection) -> dict[str, Any]:
    """The next frame that is not an agent event (events carry a seq)."""
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if "seq" not in frame:
            return frame


NOT_JSON = object()


def _check_answer(sent: str | bytes, answer: dict[str, Any]) -> None:
    message: Any = NOT_JSON
    if isinstance(sent, str):
        with contextlib.suppress(ValueError):
            message = json.loads(sent)
    kind = message.get("type") if isinstance(message, dict) else None
    rid = message.get("request_id") if isinstance(message, dict) else None
    # what is wrong before any field is read: the precise code
    if isinstance(sent, str) and message is NOT_JSON:
        assert (answer["type"], answer.get("code")) == ("error", "invalid_json"), answer
    elif not isinstance(message, dict):  # binary, or JSON that is not an object
        assert (answer["type"], answer.get("code")) == ("error", "invalid_message"), answer
    elif not (isinstance(kind, str) and kind in REPLIES):  # a type that is not a string too
        assert (answer["type"], answer.get("code")) == ("error", "unknown_type"), answer
    if answer["type"] == "error":
        assert set(answer) <= ERROR_KEYS, answer
        assert answer["code"] in ERROR_CODES, (sent[:300], answer)
        assert isinstance(answer["message"], str)
        if isinstance(rid, str):
            assert answer.get("request_id") == rid, (sent[:300], answer)
        else:
            assert "request_id" not in answer, answer
    else:  # a valid message: the reply of its type, with its request_id
        assert isinstance(kind, str) and kind in REPLIES, (sent[:300], answer)
        assert answer["type"] in REPLIES[kind], (sent[:300], answer)
        assert answer.get("request_id") == rid, (sent[:300], answer)


async def _exchange(ws_url: str, token: str, sent_frames: list[str | bytes]) -> None:
    async with connect(ws_url, max_size=2**22) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        assert (await _answer(ws))["type"] == "welcome"
        for n, sent in enumerate(sent_frames):
            size = len(sent.encode() if isinstance(sent, str) else sent)
            await ws.send(sent)
            if size > MAX_FRAME:  # the contract's one close: 1009, message too big
                with pytest.raises(ConnectionClosed):
                    await _answer(ws)
                assert ws.close_code == 1009, (size, ws.close_code, ws.close_reason)
                return
            _check_answer(sent, await _answer(ws))
            # the socket stays open and serving
            probe = {"type": "ping", "request_id": f"probe-{n}"}
            await ws.send(json.dumps(probe))
            assert await _answer(ws) == {"type": "pong", "request_id": f"probe-{n}"}


def test_every_frame_gets_an_answer_and_the_socket_stays_open(
        target: Target, user: Fixture) -> None:
    templates = _templates(user)
    counted = {"frames": 0}

    # at most 4 frames and 4 pings a socket: under its message burst (20) and far
    # under the invalid frames that close it (20)
    @given(sent_frames=st.lists(frames(templates), min_size=1, max_size=4))
    @settings(max_examples=80, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])
    def answered(sent_frames: list[str | bytes]) -> None:
        counted["frames"] += len(sent_frames)
        asyncio.run(_exchange(target.ws_url, user.token, sent_frames))

    answered()
    assert counted["frames"] >= 80


def _sweep(templates: list[dict[str, Any]]) -> Iterator[str]:
    """Every field of every message type: dropped, then set to each edge value."""
    for template in templates:
        for key in template:
            yield json.dumps({k: v for k, v in template.items() if k != key})
            for value in EDGE_VALUES:
                yield json.dumps({**template, key: value})


def test_every_field_at_its_edges_gets_an_answer(target: Target, user: Fixture) -> None:
    sweep = list(_sweep(_templates(user)))
    assert len(sweep) > 400

    async def run() -> None:
        for start in range(0, len(sweep), 4):  # 4 frames a socket, as above
            await _exchange(target.ws_url, user.token, list(sweep[start:start + 4]))

    asyncio.run(run())


async def test_a_resume_past_any_seq_in_the_auth_message_is_refused(
        target: Target, user: Fixture) -> None:
    """A cursor no stream id can follow: an invalid first message (4401), as any other,
    not a socket that closes once its replay fails."""
    async with connect(target.ws_url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": user.token,
                                  "resume": {"after": 2**64}}))
        with pytest.raises(ConnectionClosed):
            await _answer(ws)
    assert ws.close_code == 4401, ws.close_reason
    async with connect(target.ws_url) as ws:  # the largest cursor is served
        await ws.send(json.dumps({"type": "auth", "token": user.token,
                                  "resume": {"after": 2**63 - 2}}))
        assert (await _answer(ws))["type"] == "welcome"
        assert (await _answer(ws))["type"] == "resync_required"
