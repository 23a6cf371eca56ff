"""The bounds of what the event path keeps in Redis, in one place.

Worker and backend both emit into users' histories; their settings take these
defaults, so both trim a history to the same bounds unless configured apart.
"""

import time

from pydantic import BaseModel, Field

__all__ = ["EVENT_MAX_BYTES", "HISTORY_MAXLEN", "HISTORY_MAX_BYTES", "HISTORY_TTL_S",
           "INGEST_MAXLEN", "EventPathLimits", "history_hour"]

#: events kept per user (the oldest go first)
HISTORY_MAXLEN = 10_000
#: seconds a user's history lives after their last event
HISTORY_TTL_S = 86_400
#: bytes of stored events kept per user (the oldest go first)
HISTORY_MAX_BYTES = 8 * 1024 * 1024
#: bytes of one event's payload, serialized; a larger one is cut and marked
EVENT_MAX_BYTES = 64 * 1024
#: entries on the analytics ingest stream not yet inserted; producers wait beyond
INGEST_MAXLEN = 100_000


class EventPathLimits(BaseModel):
    """The settings of these bounds, shared by the worker's and the backend's
    settings (each reads them under its own prefix: they must agree when set).
    A history keeps its newest events within all three bounds (the oldest go
    first); an event payload over ``event_max_bytes`` is cut and marked."""

    history_maxlen: int = Field(default=HISTORY_MAXLEN, ge=1)
    history_ttl_s: int = Field(default=HISTORY_TTL_S, ge=1)
    history_max_bytes: int = Field(default=HISTORY_MAX_BYTES, ge=64 * 1024)
    event_max_bytes: int = Field(default=EVENT_MAX_BYTES, ge=1024)
    ingest_maxlen: int = Field(default=INGEST_MAXLEN, ge=1)


def history_hour(now: float | None = None) -> int:
    """The window of a user's history bytes written (``ww``/``wb`` of the user's meta
    hash, counted by the emit script): the hour since the epoch."""
    return int(time.time() if now is None else now) // 3600
