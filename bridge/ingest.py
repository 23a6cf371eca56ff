"""The analytics ingest stream: rows for ClickHouse, buffered in Redis.

Writers never talk to ClickHouse: they append ``{table, rows}`` here (a JSON list); the backend
replica that owns ClickHouse inserts them in batches and acknowledges them only
after the insert, so rows wait in Redis while ClickHouse is down.

The stream is never trimmed over unread rows: an append is refused while the
stream holds ``INGEST_MAXLEN`` entries (:class:`IngestBusy`: the producer's
backpressure), and the ingester trims only what its group acknowledged
(:func:`bridge.groups.trim_consumed`). An entry the ingester cannot insert goes to
``DEAD_STREAM``.

On a Redis Cluster the stream has shards (:class:`servicekit.rediskeys.StreamShards`):
each append goes to one of them (``stream``), and the cap holds per shard.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from bridge.errors import IngestBusy
from bridge.limits import INGEST_MAXLEN
from servicekit.redisclient import is_cluster
from servicekit.rediskeys import INGEST_STREAM, StreamShards

__all__ = ["AGENTS_SOURCE", "CHUNK", "USER_SOURCE", "IngestBusy", "append_command",
           "append_retrying", "append_rows"]

#: rows per stream entry
CHUNK = 1000

#: a ``usage`` row's ``source``: a record its user posted, or a model call of the
#: platform's own agents (recorded by the worker for the run's user)
USER_SOURCE = "user"
AGENTS_SOURCE = "agents"

# KEYS[1] the stream; ARGV[1] its cap; ARGV[2] the table; ARGV[3...] one entry's rows
# each. Returns the entries appended: 0 when the stream is full (nothing appended).
_APPEND_LUA = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'table', ARGV[2], 'rows', ARGV[i])
end
return #ARGV - 2
"""


def append_command(table: str, rows: list[dict[str, Any]], *,
                   maxlen: int = INGEST_MAXLEN, stream: str = INGEST_STREAM) -> tuple[Any, ...]:
    """The command that appends at most ``CHUNK`` rows as one entry, for a caller
    that sends it along with others. It answers 0 when the stream is full."""
    if len(rows) > CHUNK:
        raise ValueError(f"{len(rows)} rows: at most {CHUNK} in one entry")
    return ("EVAL", _APPEND_LUA, 1, stream, maxlen, table,
            json.dumps(rows, default=str))


async def append_retrying(execute: Callable[..., Awaitable[Any]], command: tuple[Any, ...],
                          *, attempts: int = 8, first_delay_s: float = 0.1) -> None:
    """Send an :func:`append_command` until the stream takes it, with backoff;
    raises :class:`IngestBusy` after ``attempts``."""
    delay = first_delay_s
    for attempt in range(attempts):
        if await execute(*command):
            return
        if attempt < attempts - 1:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise IngestBusy(f"{INGEST_STREAM} is full")


async def append_rows(redis: Redis, table: str, rows: list[dict[str, Any]], *,
                      maxlen: int = INGEST_MAXLEN) -> None:
    """Append rows for ``table``: one stream entry per ``CHUNK`` rows, all or none.
    Raises :class:`IngestBusy` when the stream is full."""
    chunks = [json.dumps(rows[start:start + CHUNK], default=str)
              for start in range(0, len(rows), CHUNK)]
    stream = StreamShards.of(INGEST_STREAM, cluster=is_cluster(redis)).any()
    if chunks and not await redis.eval(_APPEND_LUA, 1, stream, maxlen, table,
                                       *chunks):
        raise IngestBusy(f"{INGEST_STREAM} is full")
