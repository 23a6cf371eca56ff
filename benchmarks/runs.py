"""Runs benchmark: the agent service under concurrent runs, beside the runtime alone.

    .venv/bin/python -m benchmarks.runs [--quick] [--levels 50,200,500] [--repeat N]
                                        [--workloads arithmetic,spend] [--redis-cluster]

At 50, 200 and 500 concurrent runs, on one worker (concurrency 500), it prints runs
per second and p50/p95 run latency for two built-in workloads, twice: end to end
(from the run's POST to its terminal event on the owner's socket) and on the
worker (from the run's creation, when it is queued, to its terminal event's
timestamp: queue wait plus execution):

- ``arithmetic``: "what is 17 * 23" (triage-free path: calculator, 5 events);
- ``spend``: the supervisor pipeline on seeded usage (triage → data, a ClickHouse
  query through the backend → optimization → report, about 40 events).

Baseline, same run: the runtime alone in this process (the same planner and
tools' logic, events emitted to the same Redis, no HTTP, no queue, no backend),
for the arithmetic workload. It also prints the CPU seconds each process (backend,
worker, Postgres, Redis, the clients) used during each row, and the worker's RSS
before and after.

``--redis-cluster``: the same on a local Redis Cluster (three masters with a
replica each, on this one machine: its six nodes share the cores; their CPU is
summed under ``redis``).

``--repeat N``: every row N times over, on the same stack and users; each figure
printed is the median of its N rounds, with the lowest and highest p95 beside it
(on a shared virtual machine one round's p95 moves by a fifth).

``--workloads``: only these workloads (default: both), for example to profile a
service under one of them.

The benchmark's own event loop is uvloop, as the services' are: its clients share
the cores with what they measure, so they should cost as little as the services'
own sockets do.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from agents.builtin import builtin_agents
from agents.config import WorkerSettings
from agents.context import RunContext
from agents.runtime import Runtime
from backend.config import BackendSettings
from bridge.emitter import EventEmitter, RunEmitter
from bridge.events import TERMINAL_TYPES, parse_timestamp
from e2e.client import ChatClient, EventSocket
from e2e.measure import cpu_seconds, percentile, rss_kib
from e2e.scenarios import PASSWORD, unique_email
from e2e.stack import LocalStack, StackConfig
from e2e.usage import generate
from servicekit.redisclient import make_redis

WORKLOADS = {"arithmetic": "what is 17 * 23",
             "spend": "What did I spend on each model over the last 7 days, and how can I cut it?"}
USERS = 25
#: a user's runs active at once (the backend's default): a level past USERS times
#: this has more users
PER_USER: int = BackendSettings.model_fields["max_active_runs_per_user"].default


def _figures(latencies: list[float], elapsed: float) -> dict[str, float]:
    return {"runs_per_s": len(latencies) / elapsed, "p50_ms": percentile(latencies, 0.5),
            "p95_ms": percentile(latencies, 0.95)}


async def baseline(redis_url: str, runs: int, *, cluster: bool = False) -> dict[str, float]:
    """The runtime alone: the same agent, its events to Redis, nothing else."""
    redis = make_redis(redis_url, max_connections=runs + 8, cluster=cluster)
    agent = builtin_agents(WorkerSettings())["supervisor"]
    runtime = Runtime(max_steps=12, tool_timeout_s=10)
    emitter = EventEmitter(redis)
    loop = asyncio.get_running_loop()

    async def one(n: int) -> float:
        started = time.perf_counter()
        ctx = RunContext(run_id=f"run_base{n}_{started}", user_id=f"usr_base{n % USERS}",
                         thread_id="thr_base", agent="supervisor", input=WORKLOADS["arithmetic"],
                         emitter=RunEmitter(emitter, user_id=f"usr_base{n % USERS}",
                                            run_id=f"run_base{n}_{started}",
                                            thread_id="thr_base", agent="supervisor"),
                         deadline=loop.time() + 60)
        await runtime.run(ctx, agent)
        return (time.perf_counter() - started) * 1000

    try:
        started = time.perf_counter()
        latencies = list(await asyncio.gather(*(one(n) for n in range(runs))))
        return _figures(latencies, time.perf_counter() - started)
    finally:
        await redis.aclose()


class User:
    """A signed-in user with a socket. Its runs are started with aiohttp: on two
    shared cores, httpx's own CPU for hundreds of concurrent POSTs (about 5 ms each
    here) would weigh on the backend it measures."""

    def __init__(self, client: ChatClient, socket: EventSocket) -> None:
        self.client = client
        self.socket = socket
        self.threads: list[dict[str, Any]] = []
        self.http = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {client.access_token}"},
            connector=aiohttp.TCPConnector(limit=0))

    async def start_run(self, thread_id: str, text: str) -> dict[str, Any]:
        async with self.http.post(f"{self.client.backend_url}/api/threads/{thread_id}/runs",
                                  json={"input": text}) as response:
            body: dict[str, Any] = await response.json()
            if response.status != 202:
                raise RuntimeError(f"POST /runs answered {response.status}: {body}")
            return body

    async def aclose(self) -> None:
        await self.http.close()
        await self.socket.close()
        await self.client.aclose()


async def _users(stack: LocalStack, count: int) -> list[User]:
    users = []
    for n in range(count):
        client = ChatClient(stack.auth_url, stack.backend_url(), timeout=120)
        await client.signup(unique_email(f"runs{n}"), PASSWORD)
        await client.post_usage(generate(f"bench-{n}", 7, per_day=30))
        users.append(User(client, await client.connect(stack.ws_url())))
    return users


#: the processes whose CPU time each level reports (postgres with its children)
SERVICES = ("backend", "worker", "postgres", "redis")


def _pids(stack: LocalStack, name: str) -> list[int]:
    """The service's process, or a Redis Cluster's nodes for ``redis``."""
    names = stack.redis_names if name == "redis" else [name]
    return [_pid(stack, each) for each in names]


def _pid(stack: LocalStack, name: str) -> int:
    pid = stack.service(name).process.pid
    assert pid is not None, f"{name} is not running"
    return pid


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    return {**{name: sum(cpu_seconds(pid) for pid in each) for name, each in pids.items()},
            "clients": time.process_time()}


async def full(users: list[User], runs: int, text: str, pids: dict[str, list[int]]
               ) -> dict[str, float]:
    """``runs`` runs at once, spread over the users; latency = POST → terminal event.
    Also the CPU seconds each process used meanwhile (``cpu_<name>``)."""
    per_user = [runs // len(users) + (n < runs % len(users)) for n in range(len(users))]
    for user, count in zip(users, per_user, strict=True):  # fresh threads, made beforehand
        user.threads = [await user.client.create_thread() for _ in range(count)]

    sent: dict[str, tuple[float, float]] = {}  # run → (monotonic at POST, created_at)

    async def one(user: User, thread: dict[str, Any]) -> None:
        at = time.monotonic()
        run = await user.start_run(thread["id"], text)
        sent[run["id"]] = (at, parse_timestamp(run["created_at"]).timestamp())

    cpu_before = _cpu(pids)
    started = time.monotonic()
    marks = {id(user): len(user.socket.frames) for user in users}
    await asyncio.gather(*(one(user, thread) for user in users for thread in user.threads))
    ended: dict[str, tuple[float, float]] = {}  # run → (monotonic arrival, event ts)
    while len(ended) < runs and time.monotonic() - started < 300:
        await asyncio.sleep(0.02)
        for user in users:  # new frames only: the clients' own cost stays small
            frames = user.socket.frames
            for received in frames[marks[id(user)]:]:
                frame = received.frame
                if frame.get("type") in TERMINAL_TYPES and frame.get("run_id") in sent:
                    ended[frame["run_id"]] = (received.at, parse_timestamp(frame["ts"]).timestamp())
            marks[id(user)] = len(frames)
    if len(ended) < runs:
        raise RuntimeError(f"only {len(ended)} of {runs} runs ended within 300 s")
    cpu = {f"cpu_{name}": after - cpu_before[name] for name, after in _cpu(pids).items()}
    end_to_end = [(ended[run][0] - at) * 1000 for run, (at, _) in sent.items()]
    worker = [(ended[run][1] - created) * 1000 for run, (_, created) in sent.items()]
    figures = _figures(end_to_end, max(at for at, _ in ended.values()) - started)
    figures["worker_p50_ms"] = percentile(worker, 0.5)
    figures["worker_p95_ms"] = percentile(worker, 0.95)
    return {**figures, **cpu}


async def main_async(stack: LocalStack, levels: list[int], repeat: int = 1,
                     workloads: tuple[str, ...] = tuple(WORKLOADS)) -> None:
    pids = {name: _pids(stack, name) for name in SERVICES}
    worker = pids["worker"][0]
    users = await _users(stack, max(USERS, -(-max(levels) // PER_USER)))
    await asyncio.sleep(3)  # the seeded usage reaches ClickHouse
    rss_before = rss_kib(worker)
    # each row's figures, one set per round; printed as their medians
    rows: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        for round_ in range(1, repeat + 1):
            if repeat > 1:
                print(f"round {round_} of {repeat}", flush=True)
            for level in levels:
                rows.setdefault(("baseline: runtime alone, arithmetic", level), []).append(
                    await baseline(stack.redis_url, level, cluster=stack.config.redis_cluster))
                for name in workloads:
                    figures = await full(users, level, WORKLOADS[name], pids)
                    rows.setdefault((f"full path, {name}", level), []).append(figures)
                    print(f"  {name} x{level}: " + ", ".join(f"{k}={v:,.1f}"
                                                             for k, v in figures.items()),
                          flush=True)
        rss_after = rss_kib(worker)
    finally:
        for user in users:
            await user.aclose()
    _report(rows, repeat)
    print(f"\nworker RSS: {rss_before / 1024:,.1f} MiB before, {rss_after / 1024:,.1f} MiB "
          f"after {sum(levels) * len(workloads) * repeat:,} runs")


def _report(rows: dict[tuple[str, int], list[dict[str, float]]], repeat: int) -> None:
    """The rows' tables: each figure the median of its rounds (and, over several
    rounds, the lowest and highest p95: how much the machine moved meanwhile)."""
    median = {key: {name: statistics.median(each[name] for each in rounds)
                    for name in rounds[0]} for key, rounds in rows.items()}
    spread = f"{'p95 range':>16}" if repeat > 1 else ""
    print(f"\n{'workload':<38}{'runs':>6}{'runs/s':>9}{'p50 ms':>9}{'p95 ms':>9}"
          f"{'worker p50':>12}{'worker p95':>12}{spread}"
          + (f"   (medians of {repeat} rounds)" if repeat > 1 else ""))
    for (name, level), figures in median.items():
        p95s = [each["p95_ms"] for each in rows[name, level]]
        print(f"{name:<38}{level:>6}{figures['runs_per_s']:>9,.1f}{figures['p50_ms']:>9,.0f}"
              f"{figures['p95_ms']:>9,.0f}{figures.get('worker_p50_ms', float('nan')):>12,.0f}"
              f"{figures.get('worker_p95_ms', float('nan')):>12,.0f}"
              + (f"{f'{min(p95s):,.0f}-{max(p95s):,.0f}':>16}" if repeat > 1 else ""))
    print("\nCPU seconds used while the runs of a row ran (two cores: at most twice "
          "the wall time)")
    print(f"{'workload':<38}{'runs':>6}{'wall s':>8}"
          + "".join(f"{name:>10}" for name in (*SERVICES, "clients")) + f"{'total':>8}")
    for (name, level), figures in median.items():
        if "cpu_backend" not in figures:
            continue
        cpu = [figures[f"cpu_{service}"] for service in (*SERVICES, "clients")]
        print(f"{name:<38}{level:>6}{level / figures['runs_per_s']:>8.2f}"
              + "".join(f"{value:>10.2f}" for value in cpu) + f"{sum(cpu):>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50 runs only")
    parser.add_argument("--levels", default="50,200,500",
                        help="how many runs at once, row after row (default 50,200,500); "
                        f"past {USERS * PER_USER}, more users ({PER_USER} active runs each)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of every row; each figure is the median of its rounds "
                        "(default 1)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"which workloads, in order (default {','.join(WORKLOADS)})")
    parser.add_argument("--redis-cluster", action="store_true",
                        help="a local Redis Cluster (Redis 7+) in place of the one Redis")
    args = parser.parse_args()
    levels = [50] if args.quick else [int(n) for n in args.levels.split(",")]
    workloads = tuple(args.workloads.split(","))
    if unknown := set(workloads) - set(WORKLOADS):
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory() as tmp:
        config = StackConfig.for_tests(Path(tmp), env={
            "WORKER_CONCURRENCY": "500", "BACKEND_WS_SEND_QUEUE": "20000"},
            redis_cluster=args.redis_cluster)
        with LocalStack(config) as stack:
            uvloop.run(main_async(stack, levels, max(1, args.repeat), workloads))


if __name__ == "__main__":
    main()
