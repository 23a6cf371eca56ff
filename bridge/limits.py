"""The bounds of what the event path keeps in Redis, in one place.

Worker and backend both emit into users' histories; their settings take these
defaults, so both trim a history to the same bounds unless configured apart.
"""

__all__ = ["EVENT_MAX_BYTES", "HISTORY_MAXLEN", "HISTORY_MAX_BYTES", "HISTORY_TTL_S",
           "INGEST_MAXLEN"]

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
