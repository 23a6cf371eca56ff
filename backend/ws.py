"""The WebSocket gateway: ``/ws`` of the contract, a thin adapter over the I/O-free
cores :mod:`bridge.protocol` (client frames) and :mod:`bridge.delivery` (what a
socket sends and when).

Each connection feeds its :class:`bridge.delivery.Delivery` what happens (events,
``resume``, the pub/sub link back, answers, the live hold's end) and performs what
it asks: one sender task at a time, existing only while frames wait, sends
frames and reads the user's history; a slow consumer is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import WebSocket, WebSocketDisconnect
from redis.exceptions import RedisError
from ulid import ULID

from backend.authorization import TOKEN_EXPIRED, renewal_problem, seconds_left
from backend.shared import BackendState
from backend.tokens import InvalidToken, Principal
from bridge.delivery import (
    Close,
    Delivery,
    Drain,
    QueueOutcome,
    ReadHistory,
    ReadPosition,
    Resume,
    Send,
)
from bridge.fanout import Subscription
from bridge.protocol import (
    ApproveToolMessage,
    AuthMessage,
    CancelRunMessage,
    PingMessage,
    ProtocolError,
    ReauthMessage,
    RejectToolMessage,
    ResumeCursor,
    ResumeMessage,
    StartRunMessage,
    parse_client_message,
)
from bridge.ratelimit import TokenBucket
from servicekit import ProblemError
from servicekit.problems import INVALID_TEXT, POSTGRES_UNAVAILABLE

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
CLOSE_UNAUTHORIZED = 4401
CLOSE_ORIGIN = 4403
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_TOO_MANY = 4409
MAX_ERRORS = 20


class Connection:
    """One authenticated socket: its delivery core, timers and sender task. A sender
    task exists only while there is something to send, so an idle socket holds no
    task of its own besides the one receiving."""

    def __init__(self, ws: WebSocket, principal: Principal, state: BackendState) -> None:
        self.id = f"con_{ULID()}"
        self.ws = ws
        self.principal = principal
        self.state = state
        self.delivery = Delivery(queue_limit=state.settings.ws_send_queue)
        self.sender_task: asyncio.Task[None] | None = None
        self.ended = False
        loop = asyncio.get_running_loop()
        # live delivery waits for the client's first message, at most a hold that
        # starts once the welcome is out (:meth:`welcomed`)
        self._hold: asyncio.TimerHandle | None = None
        # the socket's authorization ends with its token's (unless renewed by `reauth`)
        self._expiry = loop.call_later(seconds_left(principal, time.time()), self._expire)

    def welcomed(self) -> None:
        """The welcome is sent: live events wait at most the hold for the client's
        first message (a resume goes first), never go before the welcome."""
        if not self.ended:
            self._hold = asyncio.get_running_loop().call_later(
                self.state.settings.ws_live_hold_s, self.go_live)

    def _cancel_hold(self) -> None:
        if self._hold is not None:
            self._hold.cancel()

    def renew(self, principal: Principal) -> None:
        """A `reauth` was accepted: the socket lives until the new token's expiry."""
        if self.ended:  # revoked while the renewal was being checked
            return
        self.principal = principal
        self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_later(
            seconds_left(principal, time.time()), self._expire)

    def _expire(self) -> None:
        left = seconds_left(self.principal, time.time())
        if left > 0:  # renewed meanwhile
            self._expiry = asyncio.get_running_loop().call_later(left, self._expire)
            return
        self.end(CLOSE_UNAUTHORIZED, TOKEN_EXPIRED)

    def end(self, code: int, reason: str) -> None:
        """Close the socket now (revoked, expired); frames still queued are dropped."""
        if self.ended:
            return
        self.ended = True
        self.stop()
        asyncio.create_task(self._close(code, reason))  # noqa: RUF006 (ends the socket)

    def resume(self, request: Resume, *, auth: bool = False) -> None:
        """Serve a ``resume`` (``auth``: carried by the auth message, so first, and
        live delivery starts)."""
        if auth:
            self._cancel_hold()
        self._perform(self.delivery.resume(request, auth=auth))

    def send_frame(self, frame: dict[str, Any]) -> None:
        """Queue an answer, in order with the events."""
        self._perform(self.delivery.frame(frame))

    def go_live(self) -> None:
        self._cancel_hold()
        self._perform(self.delivery.go_live())

    def on_event(self, seq: int, epoch: str, raw: str) -> None:
        self._perform(self.delivery.event(seq, epoch, raw))

    def on_reconnect(self) -> None:
        """The pub/sub link was down: live events may be missing."""
        self._perform(self.delivery.reconnected())

    def stop(self) -> None:
        """Nothing more is sent: timers and the sender end, queued frames are dropped."""
        self.delivery.close()
        self._cancel_hold()
        self._expiry.cancel()
        if self.sender_task is not None:
            self.sender_task.cancel()
            self.sender_task = None

    def _perform(self, outcome: QueueOutcome) -> None:
        if isinstance(outcome, Drain):
            self.sender_task = asyncio.create_task(self._send_pending())
            self.sender_task.add_done_callback(self._sender_done)
        elif isinstance(outcome, Close):  # a slow consumer
            log.info("closing %s: %s", self.id, outcome.reason)
            self.stop()
            asyncio.create_task(self._close(outcome.code, outcome.reason))  # noqa: RUF006

    async def _send_pending(self) -> None:
        user_id, streams, delivery = self.principal.user_id, self.state.streams, self.delivery
        while True:
            action = delivery.next_action()
            if isinstance(action, Send):
                await self.ws.send_text(action.text)
                delivery.sent()
            elif isinstance(action, ReadPosition):
                position = await _patiently(functools.partial(streams.position, user_id))
                delivery.position_read(position.epoch, position.last_seq)
            elif isinstance(action, ReadHistory):
                page = await _patiently(functools.partial(
                    streams.read_after, user_id, action.after, limit=action.limit))
                delivery.history_read(page.events, page.oldest_seq)
            else:
                break
        self.sender_task = None

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if self.sender_task is task:
                self.sender_task = None
            self.delivery.close()
            if not isinstance(exc, WebSocketDisconnect | RuntimeError | OSError):
                log.warning("sending on %s failed: %r", self.id, exc)
            # the socket cannot be written: end it; the client resumes elsewhere
            asyncio.create_task(self._close(CLOSE_TRY_AGAIN, "send failed; resume"))  # noqa: RUF006

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)


class Gateway:
    """Accepts sockets, authenticates them and serves them until they close.

    Admission: at most ``ws_max_unauthenticated_per_address`` sockets of one client
    address wait for their first message at a time (1013 beyond); an authenticated
    socket takes one of its user's places across all replicas
    (:class:`backend.admission.SocketAdmission`; 4409 beyond)."""

    def __init__(self) -> None:
        self._unauthenticated: Counter[str] = Counter()  # client address → sockets
        self._connections: set[Connection] = set()

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def close_all(self) -> None:
        for connection in list(self._connections):
            with contextlib.suppress(Exception):
                await connection.ws.close(CLOSE_GOING_AWAY, "server shutting down")

    async def serve(self, ws: WebSocket, state: BackendState) -> None:
        settings = state.settings
        await ws.accept()
        address = ws.client.host if ws.client is not None else ""
        if self._unauthenticated[address] >= settings.ws_max_unauthenticated_per_address:
            await ws.close(CLOSE_TRY_AGAIN, "too many unauthenticated sockets from this "
                           "address; retry later")
            return
        self._unauthenticated[address] += 1
        try:
            origin = ws.headers.get("origin")
            if origin is not None and origin not in settings.ws_allowed_origins:
                await ws.close(CLOSE_ORIGIN, "origin not allowed")
                return
            authenticated = await self._authenticate(ws, state)
        finally:
            self._unauthenticated[address] -= 1
            if self._unauthenticated[address] <= 0:
                del self._unauthenticated[address]
        if authenticated is None:
            return
        principal, resume = authenticated
        lease = await state.admission.admit(principal.user_id)
        if lease is None:
            await ws.close(CLOSE_TOO_MANY, "too many connections for this user")
            return
        connection = Connection(ws, principal, state)
        self._connections.add(connection)
        try:
            await self._run(connection, resume)
        finally:
            self._connections.discard(connection)
            await state.admission.release(principal.user_id, lease)

    async def _authenticate(self, ws: WebSocket, state: BackendState,
                            ) -> tuple[Principal, ResumeCursor | None] | None:
        try:
            text = await asyncio.wait_for(ws.receive_text(), state.settings.ws_auth_timeout_s)
        except TimeoutError:
            await ws.close(CLOSE_AUTH_TIMEOUT, "no auth message in time")
            return None
        except (WebSocketDisconnect, RuntimeError, KeyError):
            return None
        try:
            message = parse_client_message(text)
            if not isinstance(message, AuthMessage) or not (message.ticket or message.token):
                raise InvalidToken("the first message must be auth with a ticket or token")
            return await _principal(message, state), message.resume
        except (ProtocolError, InvalidToken) as exc:
            await ws.close(CLOSE_UNAUTHORIZED, f"unauthorized: {exc}"[:120])
        except (RedisError, OSError):
            await ws.close(CLOSE_TRY_AGAIN, "authentication unavailable, retry")
        return None

    async def _run(self, connection: Connection, resume: ResumeCursor | None) -> None:
        state, ws = connection.state, connection.ws
        subscription = Subscription(connection.principal.user_id, connection.on_event,
                                    connection.on_reconnect)
        await state.hub.subscribe(subscription)
        try:
            position = await state.streams.position(connection.principal.user_id)
            connection.delivery.start(position.epoch, position.last_seq)
            await ws.send_text(json.dumps({
                "type": "welcome", "connection_id": connection.id,
                "user_id": connection.principal.user_id, "epoch": position.epoch,
                "last_seq": position.last_seq, "heartbeat_s": state.settings.ws_heartbeat_s,
                **_deadline(connection.principal)}))
            if resume is not None:  # resumed in the auth message: replay, then live
                connection.resume(Resume(resume.after, resume.epoch), auth=True)
            else:
                connection.welcomed()
            await self._receive(connection)
        finally:
            connection.stop()
            await state.hub.unsubscribe(subscription)

    async def _receive(self, connection: Connection) -> None:
        errors = 0
        settings = connection.state.settings
        now = time.monotonic()
        messages = TokenBucket(settings.ws_messages_per_s, settings.ws_message_burst, now)
        starts = TokenBucket(settings.ws_start_runs_per_s, settings.ws_start_run_burst, now)
        while True:
            message = await connection.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            try:
                if text is None:
                    raise ProtocolError("invalid_message", "binary frames are not accepted")
                wait = messages.take(time.monotonic())
                parsed = parse_client_message(text)
                if not wait and isinstance(parsed, StartRunMessage):
                    wait = starts.take(time.monotonic())
                if wait:  # answered, not counted as an invalid message
                    connection.send_frame(ProtocolError(
                        "rate_limited", "too many messages on this socket; slow down",
                        parsed.request_id, retry_after_ms=math.ceil(wait * 1000)).frame())
                else:
                    await self._handle(connection, parsed)
            except ProtocolError as exc:
                errors += 1
                connection.send_frame(exc.frame())
            connection.go_live()
            if errors >= MAX_ERRORS:
                await connection.ws.close(CLOSE_POLICY, "too many invalid messages")
                return

    async def _handle(self, connection: Connection, message: Any) -> None:
        rid = message.request_id
        if isinstance(message, PingMessage):
            connection.send_frame(_with_rid({"type": "pong"}, rid))
        elif isinstance(message, ResumeMessage):
            # the client's first message: served ahead of the live events held so far
            connection.resume(Resume(message.after, message.epoch, rid))
        elif isinstance(message, StartRunMessage):
            created = await _call(connection.state.runs.create(
                connection.principal.user_id, message.thread_id, message.input, message.agent,
                message.multitask), rid)
            # queued on this socket before the run reaches the queue: its events,
            # which exist only once a worker takes it, come after, by construction
            connection.send_frame(_with_rid(
                {"type": "run_accepted", "run_id": created.run["id"]}, rid))
            await _call(connection.state.runs.after_create(created), rid)
        elif isinstance(message, CancelRunMessage):
            await _call(connection.state.runs.cancel(connection.principal.user_id,
                                                     message.run_id), rid)
            connection.send_frame(_with_rid(
                {"type": "cancel_accepted", "run_id": message.run_id}, rid))
        elif isinstance(message, ApproveToolMessage | RejectToolMessage):
            approve = isinstance(message, ApproveToolMessage)
            await _call(connection.state.approvals.answer(
                connection.principal.user_id, message.run_id, message.call_id,
                approve=approve), rid)
            connection.send_frame(_with_rid(
                {"type": "approval_accepted", "run_id": message.run_id,
                 "call_id": message.call_id, "approved": approve}, rid))
        elif isinstance(message, ReauthMessage):
            await self._reauth(connection, message)
        elif isinstance(message, AuthMessage):
            raise ProtocolError("already_authenticated", "this connection is authenticated", rid)

    async def _reauth(self, connection: Connection, message: ReauthMessage) -> None:
        """Renew the socket's authorization; a refusal leaves its deadline as it was."""
        rid = message.request_id
        try:
            if not (message.ticket or message.token):
                raise InvalidToken("reauth needs a ticket or a token")
            principal = await _call(_principal(message, connection.state), rid)
        except InvalidToken as exc:
            raise ProtocolError("unauthorized", f"not renewed: {exc}", rid) from None
        problem = renewal_problem(connection.principal, principal)
        if problem is not None:
            raise ProtocolError("unauthorized", f"not renewed: {problem}", rid)
        connection.renew(principal)
        connection.send_frame(_with_rid({"type": "reauthed", **_deadline(principal)}, rid))

    @property
    def open_connections(self) -> list[Connection]:
        """The sockets this replica serves now (revocation closes some of them)."""
        return list(self._connections)


def _deadline(principal: Principal) -> dict[str, int]:
    """When the socket's authorization ends: epoch seconds, and seconds from now
    (for a client whose clock is off)."""
    return {"expires_at": principal.expires_at,
            "expires_in": max(0, int(principal.expires_at - time.time()))}


async def _principal(message: AuthMessage | ReauthMessage, state: BackendState) -> Principal:
    if message.ticket:
        return await state.verifier.redeem_ticket(message.ticket)
    assert message.token is not None
    return await state.verifier.verify(message.token)


#: how long a socket's read of the history waits for Redis (a restart, a Redis
#: Cluster's failover: seconds) before the socket is closed for its client to resume
HISTORY_PATIENCE_S = 10.0
T = TypeVar("T")


async def _patiently(read: Callable[[], Awaitable[T]]) -> T:
    """``read()``, again with capped backoff while Redis does not answer, for up to
    :data:`HISTORY_PATIENCE_S`; live events wait in the socket's queue meanwhile."""
    deadline = asyncio.get_running_loop().time() + HISTORY_PATIENCE_S
    delay = 0.05
    while True:
        try:
            return await read()
        except RedisError:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


_UNAVAILABLE: tuple[type[Exception], ...] = (RedisError, OSError, *POSTGRES_UNAVAILABLE)


async def _call(awaitable: Any, request_id: str | None) -> Any:
    """Run a service call; its problem becomes an error frame for this request."""
    try:
        return await awaitable
    except InvalidToken:  # the caller answers it
        raise
    except ProblemError as exc:
        raise ProtocolError(exc.code, exc.detail, request_id) from None
    except _UNAVAILABLE as exc:
        raise ProtocolError("dependency_unavailable", f"retry later: {exc}", request_id) from None
    except INVALID_TEXT:
        raise ProtocolError("invalid_text", "text that cannot be stored", request_id) from None
    except Exception:  # the socket stays open whatever one request ran into
        log.exception("request %s failed", request_id)
        raise ProtocolError("internal_error", "an unexpected error occurred",
                            request_id) from None


def _with_rid(frame: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    if request_id is not None:
        frame["request_id"] = request_id
    return frame


