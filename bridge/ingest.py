"""The analytics ingest stream: rows for ClickHouse, buffered in Redis.

Writers never talk to ClickHouse: they append ``{table, row}`` here; the backend
replica that owns ClickHouse inserts them in batches and acknowledges them only
after the insert, so rows wait in Redis while ClickHouse is down.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

__all__ = ["CHUNK", "INGEST_GROUP", "INGEST_STREAM", "append_command", "append_rows"]

INGEST_STREAM = "analytics:ingest"
INGEST_GROUP = "ingester"
_MAXLEN = 1_000_000
#: rows per stream entry
CHUNK = 1000


def append_command(table: str, rows: list[dict[str, Any]]) -> tuple[Any, ...]:
    """The command that appends at most ``CHUNK`` rows as one entry, for a caller
    that sends it along with others."""
    if len(rows) > CHUNK:
        raise ValueError(f"{len(rows)} rows: at most {CHUNK} in one entry")
    return ("XADD", INGEST_STREAM, "MAXLEN", "~", _MAXLEN, "*", "table", table,
            "rows", json.dumps(rows, default=str))


async def append_rows(redis: Redis, table: str, rows: list[dict[str, Any]]) -> None:
    """Append rows for ``table``: one stream entry per ``CHUNK`` rows, all at once."""
    async with redis.pipeline(transaction=True) as pipe:
        for start in range(0, len(rows), CHUNK):
            pipe.xadd(INGEST_STREAM, {"table": table, "rows": json.dumps(
                rows[start:start + CHUNK], default=str)}, maxlen=_MAXLEN, approximate=True)
        await pipe.execute()
