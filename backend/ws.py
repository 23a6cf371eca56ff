"""The WebSocket gateway: ``/ws`` of the contract, a thin adapter over bridge.protocol.

Each connection has one bounded outbound queue, drained by one sender task at a
time, so every frame (live event, replayed event, answer) leaves in one order. The sender asks
:class:`bridge.delivery.DeliveryCursor` what to do with each event: send it,
drop a duplicate, or fill a gap from the user's history first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import Counter, deque
from typing import Any, NamedTuple

from fastapi import WebSocket, WebSocketDisconnect
from redis.exceptions import RedisError
from ulid import ULID

from backend.authorization import TOKEN_EXPIRED, renewal_problem, seconds_left
from backend.shared import BackendState
from backend.tokens import InvalidToken, Principal
from bridge.delivery import DeliveryCursor, resume_needs_resync
from bridge.fanout import Subscription
from bridge.protocol import (
    AuthMessage,
    CancelRunMessage,
    PingMessage,
    ProtocolError,
    ReauthMessage,
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


class _Outbound(NamedTuple):
    kind: str  # "event" | "frame" | "resume" | "catchup"
    seq: int = 0
    epoch: str = ""
    raw: str = ""
    frame: dict[str, Any] = {}  # noqa: RUF012 (never mutated)


class Connection:
    """One authenticated socket. Outbound frames wait in a bounded deque; a sender
    task exists only while there is something to send, so an idle socket holds no
    task of its own besides the one receiving."""

    def __init__(self, ws: WebSocket, principal: Principal, state: BackendState) -> None:
        self.id = f"con_{ULID()}"
        self.ws = ws
        self.principal = principal
        self.state = state
        self.pending: deque[_Outbound] = deque()
        self.cursor = DeliveryCursor(0)
        self.epoch = ""
        self.overflowed = False
        # Live delivery waits for the client's first message (or a short hold), so a
        # `resume` sent first is served before any live event: no gap, no duplicate.
        self.live = False
        self.sender_task: asyncio.Task[None] | None = None
        self.ended = False
        loop = asyncio.get_running_loop()
        self._hold = loop.call_later(state.settings.ws_live_hold_s, self.go_live)
        # the socket's authorization ends with its token's (unless renewed by `reauth`)
        self._expiry = loop.call_later(seconds_left(principal, time.time()), self._expire)

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
        self.pending.clear()
        asyncio.create_task(self._close(code, reason))  # noqa: RUF006 (ends the socket)

    def push(self, item: _Outbound, *, first: bool = False) -> None:
        """Queue a frame (``first``: ahead of the others). A full queue marks the
        socket as a slow consumer: its sender stops and it is closed with a resume
        hint, so its backlog never grows past the limit."""
        if self.overflowed:
            return
        if len(self.pending) >= self.state.settings.ws_send_queue:
            self.overflowed = True
            self.stop()
            asyncio.create_task(self._close_slow_consumer())  # noqa: RUF006 (ends the socket)
            return
        if first:
            self.pending.appendleft(item)
        else:
            self.pending.append(item)
        self._wake()

    def go_live(self) -> None:
        self._hold.cancel()
        self.live = True
        self._wake()

    def stop(self) -> None:
        self._hold.cancel()
        self._expiry.cancel()
        if self.sender_task is not None:
            self.sender_task.cancel()
            self.sender_task = None

    def _wake(self) -> None:
        if self.live and self.sender_task is None and self.pending:
            self.sender_task = asyncio.create_task(self._send_pending())
            self.sender_task.add_done_callback(self._sender_done)

    def on_event(self, seq: int, epoch: str, raw: str) -> None:
        self.push(_Outbound("event", seq=seq, epoch=epoch, raw=raw))

    def on_reconnect(self) -> None:
        """The pub/sub link was down: live events may be missing."""
        self.push(_Outbound("catchup"))

    async def _send_pending(self) -> None:
        while self.pending:
            item = self.pending.popleft()
            if item.kind == "event":
                await self._deliver(item.seq, item.epoch, item.raw)
            elif item.kind == "resume":
                await self._resume(item.frame)
            elif item.kind == "catchup":
                await self._catch_up()
            else:
                await self.ws.send_text(json.dumps(item.frame))
        self.sender_task = None

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if self.sender_task is task:
                self.sender_task = None
            if not isinstance(exc, WebSocketDisconnect | RuntimeError | OSError):
                log.warning("sending on %s failed: %r", self.id, exc)
            # the socket cannot be written: end it; the client resumes elsewhere
            asyncio.create_task(self._close(CLOSE_TRY_AGAIN, "send failed; resume"))  # noqa: RUF006

    async def _close_slow_consumer(self) -> None:
        log.info("closing slow consumer %s at seq %d", self.id, self.cursor.last_sent)
        await self._close(CLOSE_TRY_AGAIN, f"slow consumer; resume after {self.cursor.last_sent}")

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)

    async def _epoch_changed(self, epoch: str, last_seq: int) -> None:
        """The user's history was lost (Redis came back empty): numbering restarted."""
        self.epoch = epoch
        self.cursor.last_sent = last_seq
        await self.ws.send_text(json.dumps({"type": "resync_required", "epoch": epoch,
                                            "last_seq": last_seq}))

    async def _catch_up(self) -> None:
        position = await self.state.streams.position(self.principal.user_id)
        if position.epoch != self.epoch:
            await self._epoch_changed(position.epoch, position.last_seq)
        else:
            await self._replay(until=position.last_seq)

    async def _deliver(self, seq: int, epoch: str, raw: str) -> None:
        if epoch != self.epoch:
            await self._epoch_changed(epoch, seq - 1)
        verdict = self.cursor.classify(seq)
        if verdict == "duplicate":
            return
        if verdict == "gap":
            await self._replay(until=seq - 1)
        await self.ws.send_text(raw)
        self.cursor.sent(seq)

    async def _replay(self, until: int | None = None) -> None:
        """Send history events after the cursor (up to ``until``) in order."""
        while until is None or self.cursor.last_sent < until:
            page = await self.state.streams.read_after(self.principal.user_id,
                                                       self.cursor.last_sent, limit=500)
            events = [(s, r) for s, r in page.events if until is None or s <= until]
            if not events:
                return
            for seq, raw in events:
                if self.cursor.classify(seq) != "duplicate":
                    await self.ws.send_text(raw)
                    self.cursor.sent(seq)

    async def _resume(self, request: dict[str, Any]) -> None:
        user_id = self.principal.user_id
        position = await self.state.streams.position(user_id)
        page = await self.state.streams.read_after(user_id, request["after"], limit=1)
        self.epoch = position.epoch
        if resume_needs_resync(client_epoch=request.get("epoch"), after=request["after"],
                               epoch=position.epoch, last_seq=position.last_seq,
                               oldest_seq=page.oldest_seq):
            self.cursor.last_sent = position.last_seq
            frame = {"type": "resync_required", "epoch": position.epoch,
                     "last_seq": position.last_seq}
        else:
            self.cursor.last_sent = request["after"]
            await self._replay(until=position.last_seq)
            frame = {"type": "resumed", "epoch": position.epoch, "last_seq": position.last_seq}
        if request.get("request_id") is not None:
            frame["request_id"] = request["request_id"]
        await self.ws.send_text(json.dumps(frame))


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
            connection.cursor.last_sent = position.last_seq
            connection.epoch = position.epoch
            await ws.send_text(json.dumps({
                "type": "welcome", "connection_id": connection.id,
                "user_id": connection.principal.user_id, "epoch": position.epoch,
                "last_seq": position.last_seq, "heartbeat_s": state.settings.ws_heartbeat_s,
                **_deadline(connection.principal)}))
            if resume is not None:  # resumed in the auth message: replay, then live
                connection.push(_Outbound("resume", frame=resume.model_dump()), first=True)
                connection.go_live()
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
                    connection.push(_Outbound("frame", frame=ProtocolError(
                        "rate_limited", "too many messages on this socket; slow down",
                        parsed.request_id, retry_after_ms=math.ceil(wait * 1000)).frame()))
                elif not connection.live and isinstance(parsed, ResumeMessage):
                    # the first message: served before the live events held so far
                    connection.push(_Outbound("resume", frame=parsed.model_dump()), first=True)
                else:
                    await self._handle(connection, parsed)
            except ProtocolError as exc:
                errors += 1
                connection.push(_Outbound("frame", frame=exc.frame()))
            connection.go_live()
            if errors >= MAX_ERRORS:
                await connection.ws.close(CLOSE_POLICY, "too many invalid messages")
                return

    async def _handle(self, connection: Connection, message: Any) -> None:
        rid = message.request_id
        if isinstance(message, PingMessage):
            connection.push(_Outbound("frame", frame=_with_rid({"type": "pong"}, rid)))
        elif isinstance(message, ResumeMessage):
            connection.push(_Outbound("resume", frame=message.model_dump()))
        elif isinstance(message, StartRunMessage):
            created = await _call(connection.state.runs.create(
                connection.principal.user_id, message.thread_id, message.input, message.agent,
                message.multitask), rid)
            # queued on this socket before the run reaches the queue: its events,
            # which exist only once a worker takes it, come after, by construction
            connection.push(_Outbound("frame", frame=_with_rid(
                {"type": "run_accepted", "run_id": created.run["id"]}, rid)))
            await _call(connection.state.runs.after_create(created), rid)
        elif isinstance(message, CancelRunMessage):
            await _call(connection.state.runs.cancel(connection.principal.user_id,
                                                     message.run_id), rid)
            connection.push(_Outbound("frame", frame=_with_rid(
                {"type": "cancel_accepted", "run_id": message.run_id}, rid)))
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
        connection.push(_Outbound("frame", frame=_with_rid(
            {"type": "reauthed", **_deadline(principal)}, rid)))

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


