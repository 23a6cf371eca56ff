"""The one emitter: numbers, stores and publishes an event in one Redis script.

``EventEmitter`` is shared by a worker process (it holds no user data, only the
Redis client and limits). ``RunEmitter`` is made per run and enforces the event
invariants of the contract for that run.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge.batch import body_tail
from bridge.errors import EmitError, InvariantError, RunFinished
from bridge.events import TERMINAL_TYPES, EventType, utc_timestamp
from bridge.limits import (
    EVENT_MAX_BYTES,
    HISTORY_MAX_BYTES,
    HISTORY_MAXLEN,
    HISTORY_TTL_S,
    history_hour,
)
from bridge.truncation import cap_payload
from servicekit.autopipeline import AutoPipeline
from servicekit.redisclient import is_cluster
from servicekit.rediskeys import LIFECYCLE_STREAM, StreamShards, UserKeys

__all__ = ["LIFECYCLE_TYPES", "EmittedEvent", "EventEmitter", "RunEmitter", "new_epoch"]

#: Events that change a run's status; they also go to the lifecycle stream.
LIFECYCLE_TYPES: frozenset[str] = TERMINAL_TYPES | {"agent_started"}

#: Types that RunEmitter.emit_many may send in one batch.
_BATCHABLE: frozenset[str] = frozenset({"partial_result", "agent_thinking"})

log = logging.getLogger(__name__)
_EMIT_LUA = resources.files("bridge").joinpath("emit.lua").read_text()


_EPOCH_PREFIX = secrets.token_hex(5)
_epochs = itertools.count()


def new_epoch() -> str:
    """An epoch no other process or call gives: a random prefix per process and a
    counter (every emit offers one, for a user without an epoch yet: drawing random
    bytes each time took 2 % of a busy worker's CPU)."""
    return f"{_EPOCH_PREFIX}{next(_epochs):06x}"


class EmittedEvent(dict[str, Any]):
    """The event as stored and published (a plain dict of the contract's shape)."""


class EventEmitter:
    """Append events to users' streams. One per process; safe to share across runs.

    When Redis does not answer, an emit is retried with capped backoff for up to
    ``emit_timeout_s`` (the event waits in memory meanwhile); at most
    ``max_pending`` emits wait at once. An emit that cannot be kept raises
    :class:`EmitError`; nothing is dropped silently. Retrying is safe: an event
    carries its number within its run, and the script stores each number once.

    On a Redis Cluster the lifecycle stream's shard is on another slot than the
    user's keys: the script stores and publishes (``SPUBLISH``), then the lifecycle
    entries are appended in the same round trip's wake, again on a retry (applying
    an entry twice changes nothing). Should the process die in between, the run's
    hash still holds its start and end, which the backend applies when it reads the
    run or finds it without a worker (``RunTransitions.settle``).

    A payload over ``event_max_bytes`` (serialized) is cut and marked
    (:func:`bridge.truncation.cap_payload`) before the script sees it. The script
    keeps a user's history within ``history_maxlen`` events and ``history_max_bytes``
    bytes, dropping the oldest first.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        history_maxlen: int = HISTORY_MAXLEN,
        history_ttl_s: int = HISTORY_TTL_S,
        history_max_bytes: int = HISTORY_MAX_BYTES,
        event_max_bytes: int = EVENT_MAX_BYTES,
        emit_timeout_s: float = 10.0,
        max_pending: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(_EMIT_LUA)
        self._cluster = is_cluster(redis)
        self._lifecycle = StreamShards.of(LIFECYCLE_STREAM, cluster=self._cluster)
        self._publish = "SPUBLISH" if self._cluster else "PUBLISH"
        # the emits of all runs of the process share round trips to Redis
        self._pipeline = AutoPipeline(redis)
        self._history_maxlen = history_maxlen
        self._history_ttl_s = history_ttl_s
        self._history_max_bytes = history_max_bytes
        self._event_max_bytes = event_max_bytes
        self._emit_timeout_s = emit_timeout_s
        self._max_pending = max_pending
        self._waiting = 0
        self._clock = clock

    @property
    def waiting(self) -> int:
        """Emits currently waiting for Redis to answer again."""
        return self._waiting

    async def emit(
        self,
        *,
        user_id: str,
        run_id: str,
        thread_id: str,
        agent: str,
        type: EventType,
        payload: dict[str, Any],
        number: int = 0,
        acked: int = 0,
        lifecycle_extra: dict[str, Any] | None = None,
    ) -> EmittedEvent:
        """Store and publish one event; returns it with its ``seq`` and ``epoch``.

        ``number`` is the event's position in its run (0: append without the
        duplicate check); ``acked``: the run's last number Redis acknowledged (0:
        none, or no check). ``lifecycle_extra``: members the lifecycle entry of a
        start or an end carries besides the payload, for the backend only (the
        event is sent without them). Raises :class:`RunFinished` when the run
        already ended.
        """
        events = await self.emit_batch(user_id=user_id, run_id=run_id, thread_id=thread_id,
                                       items=[(agent, type, payload)], first_number=number,
                                       acked=acked, lifecycle_extra=lifecycle_extra)
        return events[0]

    async def emit_batch(
        self,
        *,
        user_id: str,
        run_id: str,
        thread_id: str,
        items: Sequence[tuple[str, EventType, dict[str, Any]]],
        first_number: int = 0,
        acked: int = 0,
        lifecycle_extra: dict[str, Any] | None = None,
    ) -> list[EmittedEvent]:
        """Store and publish consecutive events of one run in one script call.

        ``items`` are (agent, type, payload); they get consecutive seqs and go out
        in one pub/sub message. Numbering is ``first_number``, ``first_number + 1``…
        (0: no duplicate check). Raises :class:`RunFinished` when the run already
        ended before the batch.
        """
        ts = utc_timestamp()
        keys = UserKeys(user_id)
        args: list[Any] = [new_epoch(), self._history_maxlen, self._history_ttl_s,
                           keys.channel, first_number, user_id, run_id,
                           self._history_max_bytes, history_hour(), self._publish, acked]
        bodies = []
        lifecycles: list[tuple[str, str, str]] = []  # (type, ts, payload) to append
        for agent, type, payload in items:
            body = {"type": type, "run_id": run_id, "thread_id": thread_id, "agent": agent,
                    "ts": ts, "payload": payload}
            stored = json.dumps(body, separators=(",", ":"), default=str)
            if len(stored) > self._event_max_bytes:
                # the payload's JSON is part of the body's: only a body over the cap
                # can hold a payload over it, so the common event is serialized once
                body["payload"] = payload = cap_payload(payload, self._event_max_bytes)
                stored = json.dumps(body, separators=(",", ":"), default=str)
            bodies.append(body)
            lifecycle = (json.dumps({**payload, **(lifecycle_extra or {})}, default=str)
                         if type in LIFECYCLE_TYPES else "")
            args += [body_tail(stored), type, ts, "1" if type in TERMINAL_TYPES else "0", lifecycle]
            if lifecycle:
                lifecycles.append((type, ts, lifecycle))
        first_type = items[0][1] if items else "?"
        script_keys = [keys.meta, keys.history, keys.run(run_id)]
        appends: list[tuple[Any, ...]] = []
        if not self._cluster:
            script_keys.append(self._lifecycle.name)
        else:
            stream = self._lifecycle.for_user(user_id)
            appends = [("XADD", stream, "*", "user_id", user_id, "run_id", run_id,
                        "type", type, "ts", at, "payload", lifecycle)
                       for type, at, lifecycle in lifecycles]
        reply = await self._run_script(script_keys, args, appends, first_type, run_id)
        epoch_raw, *seqs = reply
        if not epoch_raw:
            raise RunFinished(f"{run_id} already ended; {first_type} refused")
        epoch = epoch_raw.decode() if isinstance(epoch_raw, bytes) else str(epoch_raw)
        events = []
        for body, seq in zip(bodies, (int(s) for s in seqs), strict=True):
            if seq == -2:
                raise RunFinished(f"{run_id} ended within the batch; {body['type']} refused")
            events.append(EmittedEvent(seq=max(seq, 0), epoch=epoch, duplicate=seq == -1,
                                       **body))
        return events

    async def _stored(self, keys: list[str], args: list[Any],
                      appends: list[tuple[Any, ...]]) -> Any:
        """The script's reply, once the lifecycle entries it leaves to us are in
        (none on one Redis; none either when the run had already ended)."""
        reply = await self._pipeline.script(self._script, keys, args)
        if appends and reply[0]:
            await asyncio.gather(*(self._pipeline.execute(*command) for command in appends))
        return reply

    async def _run_script(self, keys: list[str], args: list[Any],
                          appends: list[tuple[Any, ...]], type: str, run_id: str) -> Any:
        try:
            return await self._stored(keys, args, appends)
        except RedisError as first:
            if self._waiting >= self._max_pending:
                raise EmitError(f"could not emit {type} of {run_id}: {first}; "
                                f"{self._waiting} events already wait for Redis") from first
            log.warning("emit of %s for %s waits for Redis: %s", type, run_id, first)
        self._waiting += 1
        deadline = self._clock() + self._emit_timeout_s
        delay = 0.05
        try:
            while True:
                await asyncio.sleep(delay)
                try:
                    return await self._stored(keys, args, appends)
                except RedisError as exc:
                    if self._clock() >= deadline:
                        raise EmitError(f"could not emit {type} of {run_id} within "
                                        f"{self._emit_timeout_s}s: {exc}") from exc
                    delay = min(delay * 2, 1.0)
        finally:
            self._waiting -= 1


def _interrupted(call_id: str, tool: str) -> dict[str, Any]:
    """The ``tool_completed`` of a call its run's end cut short."""
    return {"call_id": call_id, "tool": tool, "ok": False, "duration_ms": 0,
            "error": {"code": "interrupted", "message": "the run ended during the call"}}


class RunEmitter:
    """The emitter of one run: keeps the contract's invariants for that run.

    - the first event is ``agent_started``;
    - nothing follows the terminal event, and there is exactly one;
    - every ``tool_executing`` is answered by a ``tool_completed`` before the end
      (open calls are closed with an ``interrupted`` error when the run ends).
    """

    def __init__(
        self, emitter: EventEmitter, *, user_id: str, run_id: str, thread_id: str, agent: str
    ) -> None:
        self._emitter = emitter
        self.user_id = user_id
        self.run_id = run_id
        self.thread_id = thread_id
        self.agent = agent
        self._started = False
        self._finished = False
        self._open_calls: dict[str, str] = {}
        self.events_emitted = 0
        # numbers are taken before the emit: one that failed after reaching Redis
        # (cancelled or timed out before the answer) may have been stored, so its
        # number is never given to the next event (which would pass for a retry)
        self._numbers = 0
        self._acked = 0  # the last number Redis acknowledged as stored
        self._held: list[tuple[str, EventType, dict[str, Any]]] = []  # (hold)

    @property
    def started(self) -> bool:
        return self._started

    def resume(self, *, events: int, pending: tuple[str, str] | None = None) -> None:
        """Go on with a run whose first ``events`` events another emitter stored (a
        run paused for a tool approval); ``pending``: the call (id, tool) that waits
        for its ``tool_completed``."""
        self._started = True
        self._numbers = self._acked = events
        if pending is not None:
            self._open_calls[pending[0]] = pending[1]

    @property
    def finished(self) -> bool:
        return self._finished

    async def emit(
        self, type: EventType, payload: dict[str, Any], *, agent: str | None = None,
        lifecycle_extra: dict[str, Any] | None = None,
    ) -> EmittedEvent:
        """Store and publish one event (after those held, in the same script call);
        a terminal one closes the open calls first (``interrupted``)."""
        self._check(type, payload)
        agent = agent or self.agent
        items: list[tuple[str, EventType, dict[str, Any]]] = []
        if type in TERMINAL_TYPES:
            items += [(agent, "tool_completed", _interrupted(call_id, tool))
                      for call_id, tool in self._open_calls.items()]
        items.append((agent, type, payload))
        events = await self._send(items, lifecycle_extra)
        if type == "tool_executing":
            self._open_calls[payload["call_id"]] = payload["tool"]
        elif type == "tool_completed":
            self._open_calls.pop(payload["call_id"], None)
        elif type in TERMINAL_TYPES:
            self._open_calls.clear()
        return events[-1]

    async def emit_many(
        self, type: EventType, payloads: Sequence[dict[str, Any]], *, agent: str | None = None
    ) -> list[EmittedEvent]:
        """Emit consecutive events of one type in one script call (streamed deltas).

        Only for types that neither start nor end the run nor open or close a
        tool call: ``partial_result``, ``agent_thinking``.
        """
        self._check_batchable(type)
        if not payloads:
            return []
        self._check(type, payloads[0])
        return await self._send([(agent or self.agent, type, payload) for payload in payloads])

    def hold(self, type: EventType, payload: dict[str, Any], *, agent: str | None = None
             ) -> None:
        """Keep an event to go out with the next one, in its script call (one round
        trip, one pub/sub message): for an event its caller follows at once with
        another, nothing between them that waits (a thought before the call it
        announces, an answer's last deltas before its end). Only the types of
        :meth:`emit_many`; held events are not yet stored (a worker lost now loses
        them, and its run ends ``worker_lost``)."""
        self._check_batchable(type)
        self._check(type, payload)
        self._held.append((agent or self.agent, type, payload))

    async def _send(self, items: list[tuple[str, EventType, dict[str, Any]]],
                    lifecycle_extra: dict[str, Any] | None = None) -> list[EmittedEvent]:
        """The held events and ``items``, in one script call."""
        items = [*self._held, *items]
        self._held.clear()
        try:
            events = await self._emitter.emit_batch(
                user_id=self.user_id, run_id=self.run_id, thread_id=self.thread_id,
                items=items, first_number=(first := self._take(len(items))),
                acked=self._acked, lifecycle_extra=lifecycle_extra)
        except RunFinished:
            self._finished = True
            raise
        self._acked = first + len(items) - 1
        self._started = True
        self._finished = items[-1][1] in TERMINAL_TYPES
        self.events_emitted += len(events)
        return events

    def _take(self, count: int) -> int:
        """Reserve ``count`` consecutive numbers of this run; returns the first."""
        first = self._numbers + 1
        self._numbers += count
        return first

    def _check(self, type: EventType, payload: dict[str, Any]) -> None:
        if self._finished:
            raise InvariantError(f"{self.run_id} already ended; {type} refused")
        if not self._started and type != "agent_started":
            raise InvariantError(f"{self.run_id}: the first event must be agent_started")
        if self._started and type == "agent_started":
            raise InvariantError(f"{self.run_id} already started")
        if type == "tool_completed" and payload.get("call_id") not in self._open_calls:
            raise InvariantError(f"{self.run_id}: no open tool call {payload.get('call_id')}")

    @staticmethod
    def _check_batchable(type: EventType) -> None:
        if type not in _BATCHABLE:
            raise InvariantError(f"{type} cannot be emitted in a batch")
