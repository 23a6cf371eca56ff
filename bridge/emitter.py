"""The one emitter: numbers, stores and publishes an event in one Redis script.

``EventEmitter`` is shared by a worker process (it holds no user data, only the
Redis client and limits). ``RunEmitter`` is made per run and enforces the event
invariants of the contract for that run.
"""

from __future__ import annotations

import json
import secrets
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge.errors import EmitError, InvariantError
from bridge.events import TERMINAL_TYPES, EventType, utc_timestamp
from bridge.keys import LIFECYCLE_STREAM, UserKeys

__all__ = ["LIFECYCLE_TYPES", "EmittedEvent", "EventEmitter", "RunEmitter", "new_epoch"]

#: Events that change a run's status; they also go to the lifecycle stream.
LIFECYCLE_TYPES: frozenset[str] = TERMINAL_TYPES | {"agent_started"}

_EMIT_LUA = resources.files("bridge").joinpath("emit.lua").read_text()


def new_epoch() -> str:
    return secrets.token_hex(8)


class EmittedEvent(dict[str, Any]):
    """The event as stored and published (a plain dict of the contract's shape)."""


class EventEmitter:
    """Append events to users' streams. One per process; safe to share across runs."""

    def __init__(
        self,
        redis: Redis,
        *,
        history_maxlen: int = 10_000,
        history_ttl_s: int = 86_400,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(_EMIT_LUA)
        self._history_maxlen = history_maxlen
        self._history_ttl_s = history_ttl_s

    async def emit(
        self,
        *,
        user_id: str,
        run_id: str,
        thread_id: str,
        agent: str,
        type: EventType,
        payload: dict[str, Any],
    ) -> EmittedEvent:
        """Store and publish one event; returns it with its ``seq`` and ``epoch``."""
        ts = utc_timestamp()
        body = {
            "type": type,
            "run_id": run_id,
            "thread_id": thread_id,
            "agent": agent,
            "ts": ts,
            "payload": payload,
        }
        encoded = json.dumps(body, separators=(",", ":"), default=str)
        keys = UserKeys(user_id)
        lifecycle: list[str] = []
        if type in LIFECYCLE_TYPES:
            lifecycle = ["user_id", user_id, "run_id", run_id, "type", type, "ts", ts,
                         "payload", json.dumps(payload, default=str)]
        try:
            seq, epoch = await self._script(
                keys=[keys.meta, keys.history, LIFECYCLE_STREAM],
                args=[encoded[1:], new_epoch(), self._history_maxlen, self._history_ttl_s,
                      keys.channel, "1" if lifecycle else "0", *lifecycle],
            )
        except RedisError as exc:
            raise EmitError(f"could not emit {type} of {run_id}: {exc}") from exc
        epoch_str = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        return EmittedEvent(seq=int(seq), epoch=epoch_str, **body)


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

    @property
    def started(self) -> bool:
        return self._started

    @property
    def finished(self) -> bool:
        return self._finished

    async def emit(
        self, type: EventType, payload: dict[str, Any], *, agent: str | None = None
    ) -> EmittedEvent:
        self._check(type, payload)
        if type in TERMINAL_TYPES:
            await self._close_open_calls(agent)
            self._finished = True
        event = await self._emitter.emit(
            user_id=self.user_id,
            run_id=self.run_id,
            thread_id=self.thread_id,
            agent=agent or self.agent,
            type=type,
            payload=payload,
        )
        self._started = True
        self.events_emitted += 1
        if type == "tool_executing":
            self._open_calls[payload["call_id"]] = payload["tool"]
        elif type == "tool_completed":
            self._open_calls.pop(payload["call_id"], None)
        return event

    def _check(self, type: EventType, payload: dict[str, Any]) -> None:
        if self._finished:
            raise InvariantError(f"{self.run_id} already ended; {type} refused")
        if not self._started and type != "agent_started":
            raise InvariantError(f"{self.run_id}: the first event must be agent_started")
        if self._started and type == "agent_started":
            raise InvariantError(f"{self.run_id} already started")
        if type == "tool_completed" and payload.get("call_id") not in self._open_calls:
            raise InvariantError(f"{self.run_id}: no open tool call {payload.get('call_id')}")

    async def _close_open_calls(self, agent: str | None) -> None:
        for call_id, tool in list(self._open_calls.items()):
            await self._emitter.emit(
                user_id=self.user_id,
                run_id=self.run_id,
                thread_id=self.thread_id,
                agent=agent or self.agent,
                type="tool_completed",
                payload={
                    "call_id": call_id,
                    "tool": tool,
                    "ok": False,
                    "error": {"code": "interrupted", "message": "the run ended during the call"},
                    "duration_ms": 0,
                },
            )
            self.events_emitted += 1
            del self._open_calls[call_id]
