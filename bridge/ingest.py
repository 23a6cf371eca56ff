"""The analytics ingest stream: rows for ClickHouse, buffered in Redis.

Writers never talk to ClickHouse: they append ``{table, row}`` here; the backend
replica that owns ClickHouse inserts them in batches and acknowledges them only
after the insert, so rows wait in Redis while ClickHouse is down.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

__all__ = ["INGEST_GROUP", "INGEST_STREAM", "append_row"]

INGEST_STREAM = "analytics:ingest"
INGEST_GROUP = "ingester"
_MAXLEN = 1_000_000


async def append_row(redis: Redis, table: str, row: dict[str, Any]) -> None:
    await redis.xadd(INGEST_STREAM, {"table": table, "row": json.dumps(row, default=str)},
                     maxlen=_MAXLEN, approximate=True)
