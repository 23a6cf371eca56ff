"""A full ingest stream answers 503 ingest_busy with Retry-After, against a real
redis-server, and nothing already on the stream is lost."""

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis

from backend.app import ingest_busy
from bridge.ingest import IngestBusy, append_rows
from servicekit.rediskeys import INGEST_STREAM


async def test_a_full_ingest_stream_answers_503_ingest_busy(redis: Redis) -> None:
    app = FastAPI()
    app.add_exception_handler(IngestBusy, ingest_busy)

    @app.post("/usage", status_code=202)
    async def usage() -> dict[str, int]:
        await append_rows(redis, "usage", [{"user_id": "usr_1"}], maxlen=3)
        return {"accepted": 1}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://backend") as client:
        accepted = [(await client.post("/usage")).status_code for _ in range(3)]
        refused = await client.post("/usage")
    assert accepted == [202, 202, 202]
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "2"
    assert refused.json()["code"] == "ingest_busy"
    assert await redis.xlen(INGEST_STREAM) == 3
