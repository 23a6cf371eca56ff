"""Delivery benchmark: the full event path beside a raw WebSocket ceiling, same run.

    .venv/bin/python -m benchmarks.delivery [--quick]

- raw ceiling: a bare uvicorn WebSocket endpoint (``benchmarks/raw_server.py``)
  sending the same event JSON to every connected client;
- full path: the ticker agent in a worker process → emit script in Redis →
  backend fan-out → authenticated sockets (one user, N sockets).

For 1, 100 and 1,000 connected clients it prints events delivered per second;
at fixed rates (500 and 2,000 events delivered per second, all sockets together:
with 100 sockets, 5 and 20 events emitted per second) the p50/p95/p99 latency
from the event's creation to its arrival; and the server's RSS per idle
connection. Clients run in
this process on the same 2 cores as the servers, for both paths alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bridge.events import parse_timestamp
from e2e.client import ChatClient
from e2e.measure import percentile, rss_kib
from e2e.scenarios import PASSWORD, unique_email
from e2e.stack import LocalStack, StackConfig, free_port


def _ts(value: float | str) -> float:
    if isinstance(value, int | float):
        return float(value)
    return parse_timestamp(value).timestamp()


class Sink:
    """N sockets, counting events and recording creation-to-arrival latencies."""

    def __init__(self) -> None:
        self.sockets: list[ClientConnection] = []
        self.readers: list[asyncio.Task[None]] = []
        self.received = 0
        self.latencies_ms: list[float] = []
        self.target = 0
        self.done = asyncio.Event()

    async def add(self, url: str, auth: dict[str, str] | None) -> None:
        ws = await connect(url, max_size=None, max_queue=None)
        if auth is not None:
            await ws.send(json.dumps(auth))
            await ws.recv()  # welcome
            await ws.send(json.dumps({"type": "ping"}))  # release live delivery at once
        self.sockets.append(ws)
        self.readers.append(asyncio.create_task(self._read(ws)))

    async def _read(self, ws: ClientConnection) -> None:
        async for message in ws:
            frame = json.loads(message)
            if frame.get("type") != "partial_result":
                continue
            self.latencies_ms.append((time.time() - _ts(frame["ts"])) * 1000)
            self.received += 1
            if self.received >= self.target:
                self.done.set()

    def expect(self, count: int) -> None:
        self.received, self.latencies_ms, self.target = 0, [], count
        self.done.clear()

    async def close(self) -> None:
        for ws in self.sockets:
            await ws.close()
        await asyncio.gather(*self.readers, return_exceptions=True)


Produce = Callable[[int, float], Awaitable[None]]  # (events, rate per second; 0 = max)


async def measure(sink: Sink, produce: Produce, events: int, rate: float) -> dict[str, float]:
    expected = events * len(sink.sockets)
    sink.expect(expected)
    started = time.perf_counter()
    await produce(events, rate)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(sink.done.wait(), 120)
    elapsed = time.perf_counter() - started
    figures = {"events_per_s": sink.received / elapsed, "delivered": sink.received / expected,
               **{f"p{int(q * 100)}": percentile(sink.latencies_ms, q)
                  for q in (0.5, 0.95, 0.99)}}
    print(f"  {len(sink.sockets)} client(s), {events} events, rate {rate or 'max'}: "
          + ", ".join(f"{k}={v:,.2f}" for k, v in figures.items()), flush=True)
    return figures


async def raw_path(clients: list[int], rates: list[int], scale: int) -> dict[str, object]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.raw_server", str(port)])  # noqa: ASYNC220
    results: dict[str, object] = {}
    try:
        async with httpx.AsyncClient(timeout=120) as http:
            for _ in range(100):
                try:
                    await http.post(f"http://127.0.0.1:{port}/blast?count=0")
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)

            async def produce(events: int, rate: float) -> None:
                await http.post(f"http://127.0.0.1:{port}/blast",
                                params={"count": events, "rate": rate})

            results = await _suite(f"ws://127.0.0.1:{port}/ws", None, produce, server.pid,
                                   clients, rates, scale)
    finally:
        server.terminate()
        server.wait(10)
    return results


async def full_path(stack: LocalStack, clients: list[int], rates: list[int],
                    scale: int) -> dict[str, object]:
    async with ChatClient(stack.auth_url, stack.backend_url()) as user:
        await user.signup(unique_email("bench"), PASSWORD)
        assert user.access_token is not None
        auth = {"type": "auth", "token": user.access_token}

        async def produce(events: int, rate: float) -> None:
            # at a rate: one ticker run per 500 events/s, each on a fixed schedule;
            # as fast as possible: 8 runs at once, their deltas in batches
            runs = min(events, math.ceil(rate / 500) if rate else 8)
            spacing = f" every {1000 * runs / rate:.3f}ms" if rate else ""
            threads = [await user.create_thread() for _ in range(runs)]
            await asyncio.gather(*(
                user.start_run(thread["id"], f"ticks {events // runs + (n < events % runs)}"
                               f"{spacing}", agent="ticker")
                for n, thread in enumerate(threads)))

        pid = stack.service("backend").process.pid
        assert pid is not None
        return await _suite(stack.ws_url(), auth, produce, pid, clients, rates, scale)


async def _suite(url: str, auth: dict[str, str] | None, produce: Produce, pid: int,
                 clients: list[int], rates: list[int], scale: int) -> dict[str, object]:
    throughput: dict[int, float] = {}
    latency: dict[tuple[int, int], dict[str, float]] = {}
    sink = Sink()
    idle_kib = 0.0
    try:
        for count in clients:
            before, added = rss_kib(pid), count - len(sink.sockets)
            while len(sink.sockets) < count:
                await sink.add(url, auth)
            await asyncio.sleep(1.0)
            if count == max(clients):
                idle_kib = (rss_kib(pid) - before) / max(1, added)
            events = max(20, scale // count)
            throughput[count] = (await measure(sink, produce, events, 0))["events_per_s"]
            if count in (1, 100):
                for rate in rates:  # deliveries per second, all sockets together
                    emitted = rate / count
                    latency[(count, rate)] = await measure(
                        sink, produce, max(20, round(emitted * 3)), emitted)
    finally:
        await sink.close()
    return {"throughput": throughput, "latency": latency, "idle_kib": idle_kib}


def _report(raw: dict[str, object], full: dict[str, object]) -> None:
    print(f"\n{'events delivered per second':<34}{'raw ceiling':>14}{'full path':>14}"
          f"{'full/raw':>10}")
    raw_t, full_t = raw["throughput"], full["throughput"]
    assert isinstance(raw_t, dict) and isinstance(full_t, dict)
    for count in raw_t:
        print(f"{f'{count} client(s)':<34}{raw_t[count]:>14,.0f}{full_t[count]:>14,.0f}"
              f"{full_t[count] / raw_t[count]:>9.0%}")
    print(f"\n{'latency, creation to arrival (ms)':<34}{'p50':>8}{'p95':>8}{'p99':>8}")
    for name, result in (("raw", raw), ("full", full)):
        lat = result["latency"]
        assert isinstance(lat, dict)
        for (count, rate), figures in lat.items():
            label = f"{name}, {count} client(s), {rate}/s"
            print(f"{label:<34}{figures['p50']:>8.1f}{figures['p95']:>8.1f}"
                  f"{figures['p99']:>8.1f}")
    print(f"\n{'RSS per idle connection (KiB)':<34}{raw['idle_kib']:>14.1f}"
          f"{full['idle_kib']:>14.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer clients and events")
    args = parser.parse_args()
    clients = [1, 20] if args.quick else [1, 100, 1000]
    rates = [500] if args.quick else [500, 2000]
    scale = 2000 if args.quick else 60_000
    print("raw ceiling:", flush=True)
    raw = asyncio.run(raw_path(clients, rates, scale))
    print("full path:", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        config = StackConfig.for_tests(Path(tmp), env={
            "BACKEND_WS_MAX_CONNECTIONS_PER_USER": "5000", "BACKEND_WS_SEND_QUEUE": "20000"})
        with LocalStack(config) as stack:
            full = asyncio.run(full_path(stack, clients, rates, scale))
    _report(raw, full)


if __name__ == "__main__":
    main()
