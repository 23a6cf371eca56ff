"""The raw ceiling for the delivery benchmark: a bare uvicorn WebSocket endpoint.

It accepts sockets without authentication and, on ``POST /blast``, sends the same
kind of event JSON the gateway sends to every connected socket, at a given rate.

    python -m benchmarks.raw_server PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

clients: set[WebSocket] = set()


async def socket(ws: WebSocket) -> None:
    await ws.accept()
    clients.add(ws)
    try:
        while True:
            await ws.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        clients.discard(ws)


def event(seq: int) -> str:
    ts = time.time()
    return json.dumps({"seq": seq, "epoch": "raw", "type": "partial_result", "run_id": "run_x",
                       "thread_id": "thr_x", "agent": "ticker", "ts": ts,
                       "payload": {"delta": f"tick {seq} "}})


async def blast(request: Request) -> JSONResponse:
    count = int(request.query_params["count"])
    rate = float(request.query_params.get("rate") or 0)
    interval = 1 / rate if rate else 0.0
    started = time.perf_counter()
    for seq in range(1, count + 1):
        raw = event(seq)
        for ws in list(clients):
            await ws.send_text(raw)
        if interval:
            await asyncio.sleep(max(0.0, started + seq * interval - time.perf_counter()))
    return JSONResponse({"sent": count, "clients": len(clients)})


app = Starlette(routes=[WebSocketRoute("/ws", socket), Route("/blast", blast, methods=["POST"])])

if __name__ == "__main__":
    # the gateway's defaults: no permessage-deflate
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                ws_per_message_deflate=False)
