"""Fairness benchmark: light users' queue wait while one heavy user saturates a worker.

    .venv/bin/python -m benchmarks.fairness [--quick]

One worker of 8 slots. A heavy user queues 300 runs of about 200 ms ("ticks 4 every
50ms", one thread each), enough to keep every slot busy for several seconds; then
four light users each start a short run every 250 ms while the backlog lasts. It
prints p50/p95 of the light users' queue wait (the run's creation, when it is
queued, to its ``agent_started`` event's timestamp), and the heavy user's, with fair
share on (the backend's dispatch window, ``BACKEND_DISPATCH_WINDOW_PER_USER=4``, and
the worker's share, ``WORKER_FAIR_SHARE``) and off (no window, first come first
served), side by side: the same load on two fresh stacks, in one run. Figures only,
no pass or fail.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.events import parse_timestamp
from e2e.client import ChatClient, EventSocket
from e2e.measure import percentile
from e2e.scenarios import PASSWORD, unique_email
from e2e.stack import LocalStack, StackConfig

CONCURRENCY = 8
HEAVY_RUN = "ticks 4 every 50ms"
LIGHT_RUN = "ticks 1"
LIGHT_USERS = 4
LIGHT_EVERY_S = 0.25


async def _user(stack: LocalStack, name: str) -> tuple[ChatClient, EventSocket]:
    client = ChatClient(stack.auth_url, stack.backend_url(), timeout=60)
    await client.signup(unique_email(name), PASSWORD)
    return client, await client.connect(stack.ws_url())


def _started(run_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f.get("run_id") == run_id and f.get("type") == "agent_started"


async def _waits(socket: EventSocket, runs: list[dict[str, Any]]) -> list[float]:
    """Queue wait of each run, ms: created_at → its agent_started event's ts."""
    waits = []
    for run in runs:
        started = await socket.wait_for(_started(run["id"]), timeout=300)
        waits.append((parse_timestamp(started["ts"]).timestamp()
                      - parse_timestamp(run["created_at"]).timestamp()) * 1000)
    return waits


async def measure(stack: LocalStack, heavy_runs: int, light_runs: int) -> dict[str, list[float]]:
    heavy, heavy_socket = await _user(stack, "heavy")
    lights = [await _user(stack, f"light{n}") for n in range(LIGHT_USERS)]
    try:
        gate = asyncio.Semaphore(16)

        async def heavy_one() -> dict[str, Any]:
            async with gate:
                thread = await heavy.create_thread()
                run: dict[str, Any] = await heavy.start_run(thread["id"], HEAVY_RUN,
                                                            agent="ticker")
                return run

        heavy_started = list(await asyncio.gather(*(heavy_one() for _ in range(heavy_runs))))

        async def light(client: ChatClient) -> list[dict[str, Any]]:
            runs = []
            for _ in range(light_runs):
                thread = await client.create_thread()
                runs.append(await client.start_run(thread["id"], LIGHT_RUN, agent="ticker"))
                await asyncio.sleep(LIGHT_EVERY_S)
            return runs

        light_started = await asyncio.gather(*(light(client) for client, _ in lights))
        light_waits = [wait for (_, socket), runs in zip(lights, light_started, strict=True)
                       for wait in await _waits(socket, runs)]
        heavy_waits = await _waits(heavy_socket, heavy_started)
        for run in heavy_started:
            await heavy_socket.wait_terminal(run["id"], timeout=300)
        return {"light": light_waits, "heavy": heavy_waits}
    finally:
        for client, socket in [(heavy, heavy_socket), *lights]:
            await socket.close()
            await client.aclose()


def _one(fair: bool, heavy_runs: int, light_runs: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        config = StackConfig.for_tests(Path(tmp), workers=1, env={
            "WORKER_CONCURRENCY": str(CONCURRENCY),
            "WORKER_FAIR_SHARE": "true" if fair else "false",
            "BACKEND_DISPATCH_WINDOW_PER_USER": "4" if fair else "1000",
            "BACKEND_MAX_ACTIVE_RUNS_PER_USER": "1000"})
        with LocalStack(config) as stack:
            return asyncio.run(measure(stack, heavy_runs, light_runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="150 heavy runs, 3 light each")
    args = parser.parse_args()
    heavy_runs, light_runs = (150, 3) if args.quick else (300, 6)
    results = {fair: _one(fair, heavy_runs, light_runs) for fair in (True, False)}
    print(f"\none worker, {CONCURRENCY} slots; heavy user: {heavy_runs} runs of "
          f"{HEAVY_RUN!r}; {LIGHT_USERS} light users: {light_runs} runs each, "
          f"{LIGHT_EVERY_S * 1000:.0f} ms apart")
    print(f"{'queue wait, ms':<24}{'fair share on':>16}{'fair share off':>16}")
    for who in ("light", "heavy"):
        for q, label in ((0.5, "p50"), (0.95, "p95")):
            on, off = (percentile(results[fair][who], q) for fair in (True, False))
            print(f"{who + ' ' + label:<24}{on:>16,.0f}{off:>16,.0f}")


if __name__ == "__main__":
    main()
