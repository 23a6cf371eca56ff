"""The event path from a running agent to every socket of its user.

One event schema (:mod:`bridge.events`), one emitter (:mod:`bridge.emitter`), the
per-user streams in Redis (:mod:`bridge.streams`), the fan-out hub that a backend
replica uses to receive its users' events (:mod:`bridge.fanout`) and the I/O-free
WebSocket protocol cores: client frames (:mod:`bridge.protocol`) and what a socket
sends and when (:mod:`bridge.delivery`).
"""

from bridge.emitter import EventEmitter, RunEmitter
from bridge.errors import BridgeError, EmitError, InvariantError
from bridge.events import TERMINAL_TYPES, Event, EventType, validate_event
from bridge.fanout import UserEventHub
from servicekit.rediskeys import UserKeys

__all__ = [
    "TERMINAL_TYPES",
    "BridgeError",
    "EmitError",
    "Event",
    "EventEmitter",
    "EventType",
    "InvariantError",
    "RunEmitter",
    "UserEventHub",
    "UserKeys",
    "validate_event",
]
