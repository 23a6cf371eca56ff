"""Sizing: what one process of each kind handles on this machine, and a deployment
worked out from it.

    .venv/bin/python -m benchmarks.sizing [--quick]

Starts its own local stack (one backend, one worker) and measures each figure
from counters read before and after a workload, never from a timed assertion:

- **delivery**: events one backend process delivers per second, and its CPU
  seconds per 1,000 deliveries: the ticker agent streaming to 100 sockets of one
  user (as ``benchmarks.delivery``), and to 100 users with one socket each;
- **idle sockets**: the backend's RSS per 1,000 idle authenticated sockets (1,000
  users, one socket each), and the CPU they cost while idle;
- **runs**: runs per second on one worker and every process's CPU milliseconds
  per run, for ``arithmetic`` ("what is 17 * 23") and ``spend`` (the supervisor
  pipeline on seeded usage), 500 of each at once; then 1,000 concurrent
  arithmetic runs, end-to-end p50/p95 (POST to the terminal event on the owner's
  socket, as ``benchmarks.runs`` measures it);
- **Redis**: commands per event and per run (``INFO commandstats``, the calls of
  every command, those a script makes included), Redis CPU per run, and the
  bytes a run leaves in Redis (``MEMORY USAGE`` of its user's keys);
- **Postgres**: transactions per run (``pg_stat_database``) and bytes per run
  (relation sizes);
- **ClickHouse**: rows per second stored, from the first
  ``POST /api/analytics/usage`` until ``GET /api/analytics/usage`` counts them
  all; then the ingester alone, the same rows appended straight to the ingest
  stream; and the number of INSERT statements (the ingester acknowledges each
  batch with one ``XACK`` after its insert: one INSERT per batch and table).

The stack's idle background (the reaper's sweeps, leases, heartbeats) is measured
first and taken off each workload's counters. Each figure is printed with the
1-minute load average read when it was measured. Last, the figures are turned
into a deployment for 100,000 concurrent users and 10,000 concurrent runs
(:func:`plan`, the arithmetic ``docs/scaling.md`` shows).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from websockets.asyncio.client import ClientConnection, connect

from benchmarks.runs import WORKLOADS
from bridge.events import TERMINAL_TYPES, parse_timestamp
from bridge.ingest import append_rows
from e2e.client import FINAL_STATUSES, ChatClient
from e2e.measure import cpu_seconds, percentile, rss_kib
from e2e.scenarios import PASSWORD, unique_email
from e2e.stack import DATABASE, LocalStack, StackConfig
from e2e.usage import generate
from servicekit.redisclient import make_redis
from servicekit.rediskeys import UserKeys

SERVICES = ("backend", "worker", "postgres", "redis")


# -- pure parts ------------------------------------------------------------------------

def commands_total(commandstats: dict[str, Any]) -> int:
    """The calls of every command in an ``INFO commandstats`` answer (as redis-py
    parses it: ``{"cmdstat_get": {"calls": 3, ...}, ...}``)."""
    return sum(int(stats["calls"]) for name, stats in commandstats.items()
               if name.startswith("cmdstat_"))


def command_calls(commandstats: dict[str, Any]) -> dict[str, int]:
    """Calls per command name (``get``, ``evalsha``...)."""
    return {name.removeprefix("cmdstat_"): int(stats["calls"])
            for name, stats in commandstats.items() if name.startswith("cmdstat_")}


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at one time."""
    intervals = list(intervals)  # read twice (a generator would be spent by the first)
    # an end (-1) sorts before a start (+1) at a tie
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def net(delta: float, background_per_s: float, seconds: float) -> float:
    """A counter's growth during a workload less what the idle stack adds in the same
    time (never below zero)."""
    return max(0.0, delta - background_per_s * seconds)


@dataclass(frozen=True)
class Measured:
    """The figures a deployment is worked out from (one process, this machine)."""

    backend_cpu_ms_per_delivery: float
    backend_rss_kib_per_socket: float  # idle, authenticated
    backend_idle_cpu_ms_per_s_per_1000_sockets: float  # heartbeats, socket leases
    backend_base_rss_mib: float
    backend_cpu_ms_per_run: float  # POST, record, lifecycle, its events to one socket
    worker_cpu_ms_per_run: float
    worker_rss_kib_per_concurrent_run: float  # (peak - at start) / most runs at once
    worker_base_rss_mib: float  # at start
    redis_commands_per_run: float
    redis_cpu_ms_per_run: float
    redis_bytes_per_event: float  # one event in a user's history
    redis_bytes_per_run_state: float  # a run's live-state hash (kept as long as the history)
    postgres_xacts_per_run: float
    postgres_cpu_ms_per_run: float
    postgres_bytes_per_run: float  # the run, its two messages, its thread
    analytics_rows_per_run: float
    clickhouse_rows_per_s: float  # the embedded chDB ingester, one backend


@dataclass(frozen=True)
class Assumptions:
    """What the deployment is sized for, and the rules of thumb it leans on."""

    users: int = 100_000  # connected at once
    sockets_per_user: float = 1.2
    concurrent_runs: int = 10_000
    events_per_run: float = 40  # the spend pipeline; arithmetic is 5
    run_seconds: float = 2.0  # a run's mean duration, start to terminal event
    headroom: float = 2.0  # provisioned / needed
    pod_memory_mib: float = 2048  # a backend pod: one process, one core
    worker_slots: int = 500  # WORKER_CONCURRENCY
    redis_ops_per_core: float = 100_000  # simple commands a second, one Redis core
    redis_shard_memory_gib: float = 32  # data per shard, leaving room to fork and grow
    peak_hours_per_day: float = 1.0  # a day's runs: the peak rate for this long
    history_maxlen: int = 10_000  # events a user's history keeps (bridge/limits.py)
    history_max_bytes: int = 8 * 1024 * 1024  # bytes a user's history keeps


@dataclass(frozen=True)
class Step:
    what: str
    arithmetic: str
    value: float
    unit: str


def plan(m: Measured, a: Assumptions) -> list[Step]:
    """The deployment, step by step: each step's arithmetic in words and figures."""
    steps: list[Step] = []

    def step(what: str, arithmetic: str, value: float, unit: str) -> float:
        steps.append(Step(what, arithmetic, value, unit))
        return value

    h = a.headroom
    runs_s = step("runs ending per second", f"{a.concurrent_runs:,} concurrent / "
                  f"{a.run_seconds:g} s each", a.concurrent_runs / a.run_seconds, "runs/s")
    events_s = step("events emitted per second", f"{runs_s:,.0f} runs/s x "
                    f"{a.events_per_run:g} events", runs_s * a.events_per_run, "events/s")
    sockets = step("sockets", f"{a.users:,} users x {a.sockets_per_user:g}",
                   a.users * a.sockets_per_user, "sockets")
    extra = step("deliveries to second sockets", f"{events_s:,.0f} events/s x "
                 f"{a.sockets_per_user - 1:g}", events_s * (a.sockets_per_user - 1),
                 "deliveries/s")
    # backend: a run's own CPU (its POST, record, lifecycle, tool queries and its events
    # to one socket), the deliveries to further sockets, and memory per socket
    idle = m.backend_idle_cpu_ms_per_s_per_1000_sockets
    backend_cores = step(
        "backend cores (CPU)", f"({runs_s:,.0f} runs/s x {m.backend_cpu_ms_per_run:.2f} ms + "
        f"{extra:,.0f} deliveries/s x {m.backend_cpu_ms_per_delivery:.4f} ms + "
        f"{sockets / 1000:,.0f} x {idle:.1f} ms for idle sockets) / 1,000",
        (runs_s * m.backend_cpu_ms_per_run + extra * m.backend_cpu_ms_per_delivery
         + sockets / 1000 * idle) / 1000, "cores")
    per_pod = step("sockets per backend pod (memory)",
                   f"({a.pod_memory_mib:,.0f} MiB - {m.backend_base_rss_mib:.0f} MiB) / "
                   f"{m.backend_rss_kib_per_socket:.1f} KiB",
                   (a.pod_memory_mib - m.backend_base_rss_mib) * 1024
                   / m.backend_rss_kib_per_socket, "sockets")
    step("backend pods", f"max({backend_cores:.1f} cores, {sockets:,.0f} / "
         f"{per_pod:,.0f} sockets) x {h:g} headroom",
         math.ceil(max(backend_cores, sockets / per_pod) * h), "pods")
    # workers: CPU per run, and slots for the concurrent runs
    worker_cores = step("worker cores (CPU)", f"{runs_s:,.0f} runs/s x "
                        f"{m.worker_cpu_ms_per_run:.2f} ms / 1,000",
                        runs_s * m.worker_cpu_ms_per_run / 1000, "cores")
    slots = step("worker pods by slots", f"{a.concurrent_runs:,} runs / {a.worker_slots} slots",
                 a.concurrent_runs / a.worker_slots, "pods")
    worker_mem = step("worker memory per pod", f"{m.worker_base_rss_mib:.0f} MiB + "
                      f"{a.worker_slots} x {m.worker_rss_kib_per_concurrent_run:.1f} KiB",
                      m.worker_base_rss_mib
                      + a.worker_slots * m.worker_rss_kib_per_concurrent_run / 1024, "MiB")
    step("worker pods", f"max({worker_cores:.1f} cores, {slots:.0f} by slots) x {h:g} "
         f"headroom, {worker_mem:,.0f} MiB each",
         math.ceil(max(worker_cores, slots) * h), "pods")
    # Redis: commands (and its measured CPU) per run; memory for a day's histories
    # and runs' live state (both kept 24 h)
    commands_s = step("Redis commands per second", f"{runs_s:,.0f} runs/s x "
                      f"{m.redis_commands_per_run:.1f}", runs_s * m.redis_commands_per_run,
                      "commands/s")
    redis_cores = step("Redis cores (its CPU measured)", f"{runs_s:,.0f} runs/s x "
                       f"{m.redis_cpu_ms_per_run:.3f} ms / 1,000",
                       runs_s * m.redis_cpu_ms_per_run / 1000, "cores")
    runs_day = step("runs a day", f"{runs_s:,.0f} runs/s x 3,600 x {a.peak_hours_per_day:g} h",
                    runs_s * 3600 * a.peak_hours_per_day, "runs")
    user_runs = step("runs a day per user", f"{runs_day:,.0f} / {a.users:,} users",
                     runs_day / a.users, "runs")
    capped = min(a.history_maxlen, a.history_max_bytes / m.redis_bytes_per_event)
    retained = step("events a history keeps", f"min({user_runs:,.0f} runs x "
                    f"{a.events_per_run:g} events, {capped:,.0f} at the caps)",
                    min(user_runs * a.events_per_run, capped), "events")
    history = step("Redis memory: histories", f"{a.users:,} users x {retained:,.0f} events x "
                   f"{m.redis_bytes_per_event:.0f} B",
                   a.users * retained * m.redis_bytes_per_event / 2**30, "GiB")
    step("  (bound: every history at its caps)", f"{a.users:,} users x {capped:,.0f} events x "
         f"{m.redis_bytes_per_event:.0f} B", a.users * capped * m.redis_bytes_per_event / 2**30,
         "GiB")
    states = step("Redis memory: runs' live state (24 h)", f"{runs_day:,.0f} runs x "
                  f"{m.redis_bytes_per_run_state:,.0f} B",
                  runs_day * m.redis_bytes_per_run_state / 2**30, "GiB")
    memory = step("Redis memory", f"({history:,.1f} + {states:,.1f} GiB) x {h:g} headroom",
                  (history + states) * h, "GiB")
    by_commands = commands_s / a.redis_ops_per_core
    step("Redis primaries", f"max({commands_s:,.0f} / {a.redis_ops_per_core:,.0f} a core, "
         f"{redis_cores:.1f} cores x {h:g}, {memory:,.0f} / {a.redis_shard_memory_gib:g} GiB)",
         math.ceil(max(by_commands * h, redis_cores * h,
                       memory / a.redis_shard_memory_gib)), "primaries")
    # Postgres: transactions and CPU per run, bytes per run
    step("Postgres transactions per second", f"{runs_s:,.0f} runs/s x "
         f"{m.postgres_xacts_per_run:.2f}", runs_s * m.postgres_xacts_per_run, "xacts/s")
    step("Postgres cores (its CPU measured)", f"{runs_s:,.0f} runs/s x "
         f"{m.postgres_cpu_ms_per_run:.2f} ms / 1,000 x {h:g} headroom",
         runs_s * m.postgres_cpu_ms_per_run / 1000 * h, "cores")
    step("Postgres storage a day", f"{runs_day:,.0f} runs x {m.postgres_bytes_per_run:,.0f} B",
         runs_day * m.postgres_bytes_per_run / 2**30, "GiB/day")
    # ClickHouse: rows per run against what the embedded ingester stored per second
    rows_s = step("ClickHouse rows per second", f"{runs_s:,.0f} runs/s x "
                  f"{m.analytics_rows_per_run:.1f} rows", runs_s * m.analytics_rows_per_run,
                  "rows/s")
    step("ClickHouse ingesters at the measured rate", f"{rows_s:,.0f} / "
         f"{m.clickhouse_rows_per_s:,.0f} rows/s x {h:g} headroom",
         math.ceil(rows_s / m.clickhouse_rows_per_s * h), "ingesters")
    return steps


def load() -> float:
    """The 1-minute load average now."""
    return os.getloadavg()[0]


@dataclass
class Figure:
    what: str
    value: float
    unit: str
    how: str
    load: float = field(default_factory=load)


# -- the clients -----------------------------------------------------------------------

@dataclass(frozen=True)
class Account:
    email: str
    token: str


class Tally:
    """What the sockets received: streamed deltas, events per run, each run's
    terminal event (monotonic arrival, the event's own timestamp)."""

    def __init__(self) -> None:
        self.deltas = 0
        self.target = 0
        self.reached = asyncio.Event()
        self.events: Counter[str] = Counter()
        self.ended: dict[str, tuple[float, float]] = {}
        self.started: dict[str, float] = {}  # run → its agent_started timestamp

    def take(self, frame: dict[str, Any]) -> None:
        run = frame.get("run_id")
        if run is None or "seq" not in frame:
            return
        self.events[run] += 1
        kind = frame.get("type")
        if kind == "partial_result":
            self.deltas += 1
            if self.deltas >= self.target > 0:
                self.reached.set()
        elif kind == "agent_started":
            self.started[run] = parse_timestamp(frame["ts"]).timestamp()
        elif kind in TERMINAL_TYPES:
            self.ended[run] = (time.monotonic(), parse_timestamp(frame["ts"]).timestamp())

    def expect_deltas(self, count: int) -> None:
        self.deltas, self.target = 0, count
        self.reached.clear()


class Sockets:
    """Authenticated sockets feeding one :class:`Tally`; ``user_id`` by token."""

    def __init__(self, url: str, tally: Tally) -> None:
        self.url = url
        self.tally = tally
        self.open: list[ClientConnection] = []
        self.readers: list[asyncio.Task[None]] = []
        self.user_ids: dict[str, str] = {}

    async def add(self, token: str) -> str:
        ws = await connect(self.url, max_size=None, max_queue=None)
        await ws.send(json.dumps({"type": "auth", "token": token}))
        welcome = json.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"no welcome: {welcome}")
        await ws.send(json.dumps({"type": "ping"}))  # release live delivery at once
        self.open.append(ws)
        self.readers.append(asyncio.create_task(self._read(ws)))
        self.user_ids[token] = welcome["user_id"]
        return str(welcome["user_id"])

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                self.tally.take(json.loads(message))

    async def close(self) -> None:
        await asyncio.gather(*(ws.close() for ws in self.open), return_exceptions=True)
        await asyncio.gather(*self.readers, return_exceptions=True)
        self.open, self.readers = [], []


class Bench:
    def __init__(self, stack: LocalStack, quick: bool) -> None:
        self.stack = stack
        self.quick = quick
        self.pids = {}
        for name in SERVICES:
            pid = stack.service(name).process.pid
            assert pid is not None, f"{name} is not running"
            self.pids[name] = pid
        self.redis = make_redis(stack.redis_url)
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                          timeout=aiohttp.ClientTimeout(total=300))
        self.base = stack.backend_url()
        self.figures: list[Figure] = []
        self.background: dict[str, float] = {}
        self.measured: dict[str, float] = {}
        self.own_xacts = 0  # this benchmark's own transactions in the app's database
        self.settle_s = 2.0 if quick else 11.0  # idle connections report their stats late
        self.worker_start_rss = rss_kib(self.pids["worker"])
        self.worker_peak_rss = self.worker_start_rss
        self._stats: asyncpg.Connection | None = None
        self._app: asyncpg.Connection | None = None

    async def open(self) -> None:
        port = self.stack.config.ports.postgres
        self._stats = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres",
                                            database="postgres")
        self._app = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres",
                                          database=DATABASE)

    async def close(self) -> None:
        await self.http.close()
        await self.redis.aclose()
        for conn in (self._stats, self._app):
            if conn is not None:
                await conn.close()

    def figure(self, what: str, value: float, unit: str, how: str) -> None:
        self.figures.append(Figure(what, value, unit, how))
        print(f"  {what}: {value:,.3f} {unit} (load {self.figures[-1].load:.2f})", flush=True)

    # -- counters ----------------------------------------------------------------------
    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    async def commands(self) -> dict[str, int]:
        return command_calls(await self.redis.info("commandstats"))

    async def xacts(self) -> int:
        assert self._stats is not None
        value = await self._stats.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
            DATABASE)
        return int(value)

    async def app_query(self, sql: str, *args: Any) -> Any:
        assert self._app is not None
        self.own_xacts += 1
        return await self._app.fetchval(sql, *args)

    async def app_bytes(self) -> int:
        return int(await self.app_query(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'app' AND c.relkind = 'r'"))

    async def measure_background(self) -> None:
        """The idle stack's own rates: CPU per process, Redis commands, transactions."""
        window = 3.0 if self.quick else 20.0
        await asyncio.sleep(self.settle_s)
        cpu, cmds, xacts, at = self.cpu(), await self.commands(), await self.xacts(), \
            time.monotonic()
        await asyncio.sleep(window)
        cpu2, cmds2, xacts2 = self.cpu(), await self.commands(), await self.xacts()
        elapsed = time.monotonic() - at
        self.background = {f"cpu_{n}": (cpu2[n] - cpu[n]) / elapsed for n in SERVICES}
        self.background["commands"] = (sum(cmds2.values()) - sum(cmds.values())) / elapsed
        self.background["xacts"] = (xacts2 - xacts) / elapsed
        print("idle background per second: " + ", ".join(
            f"{k}={v:.3f}" for k, v in self.background.items()), flush=True)

    # -- accounts ----------------------------------------------------------------------
    async def accounts(self, prefix: str, count: int) -> list[Account]:
        """``count`` new users, signed up through auth, four at a time."""
        gate = asyncio.Semaphore(4)

        async def one(n: int) -> Account:
            async with gate, ChatClient(self.stack.auth_url, self.base, timeout=120) as client:
                email = unique_email(f"{prefix}{n}")
                await client.signup(email, PASSWORD)
                assert client.access_token is not None
                return Account(email, client.access_token)

        return list(await asyncio.gather(*(one(n) for n in range(count))))

    async def call(self, method: str, path: str, token: str, **kwargs: Any) -> Any:
        async with self.http.request(method, f"{self.base}{path}",
                                     headers={"Authorization": f"Bearer {token}"},
                                     **kwargs) as response:
            body = await response.json()
            if response.status >= 300:
                raise RuntimeError(f"{method} {path} answered {response.status}: {body}")
            return body

    async def threads(self, token: str, count: int) -> list[str]:
        gate = asyncio.Semaphore(8)

        async def one() -> str:
            async with gate:
                return str((await self.call("POST", "/api/threads", token,
                                            json={"title": ""}))["id"])

        return list(await asyncio.gather(*(one() for _ in range(count))))

    # -- idle sockets ------------------------------------------------------------------
    async def idle_sockets(self) -> None:
        count = 20 if self.quick else 1000
        print(f"idle sockets: signing up {count} users", flush=True)
        users = await self.accounts("idle", count)
        pid = self.pids["backend"]
        warm = Sockets(self.stack.ws_url(), Tally())
        for user in users[:10]:  # the first sockets load code paths
            await warm.add(user.token)
        await warm.close()
        await asyncio.sleep(1.0)
        before = rss_kib(pid)
        sockets = Sockets(self.stack.ws_url(), Tally())
        for user in users:
            await sockets.add(user.token)
        await asyncio.sleep(2.0)
        after = rss_kib(pid)
        per_socket = (after - before) / count
        self.measured["backend_rss_kib_per_socket"] = per_socket
        self.measured["backend_base_rss_mib"] = before / 1024
        self.figure("backend RSS before the sockets", before / 1024, "MiB",
                    "VmRSS of the backend process, 10 sockets opened and closed before")
        self.figure(f"backend RSS per 1,000 idle sockets ({count} users, one socket each)",
                    per_socket * 1000 / 1024, "MiB",
                    f"(RSS with {count} authenticated idle sockets - RSS before) / {count}"
                    " x 1,000")
        window = 3.0 if self.quick else 25.0  # longer than a heartbeat (20 s)
        cpu, at = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(window)
        elapsed = time.monotonic() - at
        idle_cpu = net(cpu_seconds(pid) - cpu, self.background["cpu_backend"], elapsed)
        per_1000 = idle_cpu / elapsed / count * 1000 * 1000
        self.measured["backend_idle_cpu_ms_per_s_per_1000_sockets"] = per_1000
        self.figure("backend CPU of 1,000 idle sockets", per_1000, "ms/s",
                    f"backend CPU over {window:.0f} s with the sockets open, less the idle "
                    "background, per 1,000 sockets")
        await sockets.close()

    # -- delivery ----------------------------------------------------------------------
    async def ticker(self, token: str, runs: int, events: int) -> None:
        threads = await self.threads(token, runs)
        await asyncio.gather(*(
            self.call("POST", f"/api/threads/{thread}/runs", token,
                      json={"input": f"ticks {events // runs + (n < events % runs)}",
                            "agent": "ticker"})
            for n, thread in enumerate(threads)))

    async def deliver(self, label: str, tally: Tally, deliveries: int, emitted: int,
                      produce: Any) -> None:
        tally.expect_deltas(deliveries)
        cpu, cmds = self.cpu(), await self.commands()
        started = time.monotonic()
        await produce
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.reached.wait(), 120)
        elapsed = time.monotonic() - started
        cpu2, cmds2 = self.cpu(), await self.commands()
        used = {n: net(cpu2[n] - cpu[n], self.background[f"cpu_{n}"], elapsed)
                for n in SERVICES}
        commands = net(sum(cmds2.values()) - sum(cmds.values()), self.background["commands"],
                       elapsed)
        if tally.deltas < deliveries:
            print(f"  only {tally.deltas} of {deliveries} deliveries arrived", flush=True)
        self.figure(f"events delivered per second, {label}", tally.deltas / elapsed,
                    "events/s", f"{tally.deltas:,} streamed deltas counted on the sockets / "
                    "seconds from the first POST to the last arrival")
        ms_per_1000 = used["backend"] / tally.deltas * 1000
        self.figure(f"backend CPU per 1,000 deliveries, {label}", ms_per_1000, "s",
                    "backend CPU seconds during the workload, less the idle background")
        self.figure(f"worker + Redis CPU per 1,000 events emitted, {label}",
                    (used["worker"] + used["redis"]) / emitted * 1000, "s",
                    "worker and redis-server CPU seconds, less the idle background")
        self.figure(f"Redis commands per event emitted, {label}", commands / emitted,
                    "commands", "INFO commandstats calls (scripts' own commands included) "
                    "before/after, less the idle background")
        self.measured[f"backend_cpu_ms_per_delivery_{label}"] = ms_per_1000

    async def delivery(self) -> None:
        url = self.stack.ws_url()
        events = 20 if self.quick else 1200  # to each of the 100 sockets of one user
        (one,) = await self.accounts("fanout", 1)
        tally = Tally()
        sockets = Sockets(url, tally)
        for _ in range(20 if self.quick else 100):
            await sockets.add(one.token)
        count = len(sockets.open)
        await self.ticker(one.token, 1, 5)  # warm the ticker and the gateway
        await asyncio.sleep(1.0)
        await self.deliver(f"one user, {count} sockets", tally, events * count, events,
                           self.ticker(one.token, 8, events))
        await sockets.close()

        users = await self.accounts("fan1", 20 if self.quick else 100)
        tally = Tally()
        sockets = Sockets(url, tally)
        for user in users:
            await sockets.add(user.token)
        per_user = 20 if self.quick else 300
        await asyncio.sleep(1.0)
        total = per_user * len(users)
        await self.deliver(f"{len(users)} users, one socket each", tally, total, total,
                           asyncio.gather(*(self.ticker(u.token, 1, per_user) for u in users)))
        await sockets.close()

    # -- runs --------------------------------------------------------------------------
    async def run_users(self, prefix: str, count: int, seed: bool) -> tuple[list[Account],
                                                                            Sockets, Tally]:
        users = await self.accounts(prefix, count)
        if seed:
            for n, user in enumerate(users):
                await self.call("POST", "/api/analytics/usage", user.token,
                                json={"records": generate(f"sizing-{n}", 7, per_day=30)})
        tally = Tally()
        sockets = Sockets(self.stack.ws_url(), tally)
        for user in users:
            await sockets.add(user.token)
        return users, sockets, tally

    async def runs(self, label: str, users: list[Account], sockets: Sockets, tally: Tally,
                   text: str, count: int) -> dict[str, float]:
        """``count`` runs at once spread over ``users`` (a fresh thread each)."""
        per_user = [count // len(users) + (n < count % len(users)) for n in range(len(users))]
        threads = [(user, thread) for user, n in zip(users, per_user, strict=True)
                   for thread in await self.threads(user.token, n)]
        sent: dict[str, tuple[float, float]] = {}

        async def one(user: Account, thread: str) -> None:
            at = time.monotonic()
            run = await self.call("POST", f"/api/threads/{thread}/runs", user.token,
                                  json={"input": text})
            sent[run["id"]] = (at, parse_timestamp(run["created_at"]).timestamp())

        await asyncio.sleep(1.0)
        worker_rss = rss_kib(self.pids["worker"])
        peak_rss = worker_rss
        bytes_before = await self.app_bytes()
        xacts_before, own_before = await self.xacts(), self.own_xacts
        cpu, cmds = self.cpu(), await self.commands()
        clients = time.process_time()
        started = time.monotonic()
        await asyncio.gather(*(one(user, thread) for user, thread in threads))
        while len([r for r in sent if r in tally.ended]) < count:
            if time.monotonic() - started > 300:
                raise RuntimeError(f"{label}: runs did not end within 300 s")
            await asyncio.sleep(0.05)
            peak_rss = max(peak_rss, rss_kib(self.pids["worker"]))
        last = max(tally.ended[r][0] for r in sent)
        ids = list(sent)
        while True:  # until the lifecycle reached Postgres
            final = await self.app_query(
                "SELECT count(*) FROM app.runs WHERE id = ANY($1::text[]) "
                "AND status = ANY($2::text[])", ids, list(FINAL_STATUSES))
            if final >= count:
                break
            await asyncio.sleep(0.1)
        applied = time.monotonic()
        cpu2, cmds2 = self.cpu(), await self.commands()
        clients = time.process_time() - clients
        await asyncio.sleep(self.settle_s)
        xacts_after = await self.xacts()
        own = self.own_xacts - own_before
        bytes_after = await self.app_bytes()
        settled = time.monotonic()

        window = applied - started
        used = {n: net(cpu2[n] - cpu[n], self.background[f"cpu_{n}"], window) for n in SERVICES}
        commands = net(sum(cmds2.values()) - sum(cmds.values()), self.background["commands"],
                       window)
        xacts = net(xacts_after - xacts_before - own, self.background["xacts"],
                    settled - started)
        events = sum(tally.events[r] for r in ids)
        end_to_end = [(tally.ended[r][0] - at) * 1000 for r, (at, _) in sent.items()]
        on_worker = [(tally.ended[r][1] - created) * 1000 for r, (_, created) in sent.items()]
        self.worker_peak_rss = max(self.worker_peak_rss, peak_rss)
        gross = sum(cpu2[n] - cpu[n] for n in SERVICES) + clients
        memory = await self.redis_bytes([sockets.user_ids[u.token] for u in users])
        rows = await self.analytics_rows(users)
        figures = {
            "runs": count, "runs_per_s": count / (last - started),
            "p50_ms": percentile(end_to_end, 0.5), "p95_ms": percentile(end_to_end, 0.95),
            "worker_p50_ms": percentile(on_worker, 0.5),
            "worker_p95_ms": percentile(on_worker, 0.95),
            "events_per_run": events / count,
            **{f"{n}_cpu_ms_per_run": used[n] / count * 1000 for n in SERVICES},
            "redis_commands_per_run": commands / count,
            "redis_commands_per_event": commands / events,
            "postgres_xacts_per_run": xacts / count,
            "postgres_bytes_per_run": (bytes_after - bytes_before) / count,
            "redis_bytes_per_event": memory["history"] / max(1, memory["history_events"]),
            "redis_bytes_per_run_state": memory["runs"] / max(1, memory["run_keys"]),
            "run_state_ttl_s": memory["run_ttl_s"],
            "analytics_rows_per_run": rows / count,
            "worker_most_runs_at_once": max_overlap(
                (tally.started[r], tally.ended[r][1]) for r in ids if r in tally.started),
            "worker_rss_mib_before": worker_rss / 1024,
            "worker_rss_mib_peak": peak_rss / 1024,
            "clients_cpu_ms_per_run": clients / count * 1000,
            "machine_busy_percent": 100 * gross / ((os.cpu_count() or 1) * (applied - started)),
        }
        at_load = load()
        print(f"  {label} x{count} (load {at_load:.2f}): " + ", ".join(
            f"{k}={v:,.2f}" for k, v in figures.items()), flush=True)
        calls = Counter({c: cmds2.get(c, 0) - cmds.get(c, 0) for c in cmds2})
        print("  Redis commands per run, most called (idle background included): " + ", ".join(
            f"{c} {n / count:.1f}" for c, n in calls.most_common(12)), flush=True)
        return {**figures, "load": at_load}

    async def redis_bytes(self, user_ids: Iterable[str]) -> dict[str, float]:
        """What the users' runs left in Redis: history bytes and events, run hashes."""
        out = {"history": 0.0, "history_events": 0.0, "runs": 0.0, "run_keys": 0.0,
               "run_ttl_s": 0.0}
        for user_id in user_ids:
            keys = UserKeys(user_id)
            out["history"] += await self.redis.memory_usage(keys.history, samples=0) or 0
            out["history_events"] += await self.redis.xlen(keys.history)
            async for key in self.redis.scan_iter(match=keys.run("*"), count=1000):
                out["runs"] += await self.redis.memory_usage(key, samples=0) or 0
                out["run_keys"] += 1
                out["run_ttl_s"] = max(out["run_ttl_s"], await self.redis.ttl(key))
        return out

    async def analytics_rows(self, users: list[Account]) -> float:
        """Rows the users' runs added to ClickHouse: a row a run, a row a tool call."""
        rows = 0.0
        for user in users:
            runs = await self.call("GET", "/api/analytics/runs", user.token)
            tools = await self.call("GET", "/api/analytics/tools", user.token)
            rows += len(runs["items"])
            rows += sum(float(i.get("calls", 0)) for i in tools["items"])
        return rows

    async def workloads(self) -> dict[str, dict[str, float]]:
        count = 20 if self.quick else 500
        results: dict[str, dict[str, float]] = {}
        for name in WORKLOADS:
            print(f"runs: {name}", flush=True)
            users, sockets, tally = await self.run_users(name, 4 if self.quick else 25,
                                                         seed=name == "spend")
            await asyncio.sleep(3.0)  # the seeded usage reaches ClickHouse
            results[name] = await self.runs(name, users, sockets, tally, WORKLOADS[name],
                                            count)
            await sockets.close()
        big = 40 if self.quick else 1000
        print(f"runs: {big:,} concurrent arithmetic", flush=True)
        users, sockets, tally = await self.run_users("big", 2 if self.quick else 50, seed=False)
        results["arithmetic_1000"] = await self.runs(
            f"arithmetic, {big:,} concurrent", users, sockets, tally, WORKLOADS["arithmetic"],
            big)
        await sockets.close()
        return results

    # -- ClickHouse ingest -------------------------------------------------------------
    async def ingest(self) -> None:
        """Usage rows into ClickHouse twice: through the API (POSTs of 10,000), then
        appended straight to the ingest stream, as the workers append theirs (the
        ingester alone)."""
        rows = 10_000 if self.quick else 200_000
        accounts = await self.accounts("ingest", 2)
        probe = Sockets(self.stack.ws_url(), Tally())
        ids = [await probe.add(account.token) for account in accounts]
        await probe.close()
        for (account, user_id), path in zip(zip(accounts, ids, strict=True),
                                            ("api", "stream"), strict=True):
            records = generate(f"sizing-{path}", 100, per_day=rows // 100)
            assert len(records) == rows
            cmds = await self.commands()
            started = time.monotonic()
            if path == "api":
                for start in range(0, rows, 10_000):
                    await self.call("POST", "/api/analytics/usage", account.token,
                                    json={"records": records[start:start + 10_000]})
            else:
                for start in range(0, rows, 10_000):  # entries of 1,000 rows, as workers do
                    await append_rows(self.redis, "usage", [
                        {**record, "source": "user", "user_id": user_id}
                        for record in records[start:start + 10_000]])
            appended = time.monotonic()
            seen = 0
            while seen < rows:
                if time.monotonic() - started > 600:
                    raise RuntimeError(f"ClickHouse holds {seen} of {rows} rows after 600 s")
                await asyncio.sleep(0.2)
                items = (await self.call("GET", "/api/analytics/usage", account.token,
                                         params={"from": "2000-01-01T00:00:00Z"}))["items"]
                seen = sum(int(i["requests"]) for i in items)
            visible = time.monotonic()
            inserts = (await self.commands()).get("xack", 0) - cmds.get("xack", 0)
            rate = rows / (visible - started)
            if path == "api":
                self.figure("usage rows accepted per second (POST, 10,000 a request)",
                            rows / (appended - started), "rows/s",
                            f"{rows:,} rows / seconds the POSTs took, one after the other")
                self.figure("usage rows stored per second, through the API", rate, "rows/s",
                            f"{rows:,} rows / seconds from the first POST until GET "
                            "counts them all")
            else:
                self.measured["clickhouse_rows_per_s"] = rate
                self.figure("usage rows stored per second, the ingester alone", rate, "rows/s",
                            f"{rows:,} rows appended to the ingest stream in "
                            f"{appended - started:.1f} s / seconds until GET counts them all")
            self.figure(f"INSERT statements for those rows ({path})", inserts, "statements",
                        "XACK calls meanwhile: the ingester acknowledges a batch after its "
                        "one INSERT")


def _report(bench: Bench, results: dict[str, dict[str, float]]) -> Measured:
    print(f"\n{'figure':<72}{'value':>14}  unit{'':<10}load")
    for f in bench.figures:
        print(f"{f.what:<72}{f.value:>14,.3f}  {f.unit:<14}{f.load:.2f}")
    keys = ["runs_per_s", "p50_ms", "p95_ms", "worker_p50_ms", "worker_p95_ms",
            "events_per_run", *[f"{n}_cpu_ms_per_run" for n in SERVICES],
            "redis_commands_per_run", "redis_commands_per_event", "postgres_xacts_per_run",
            "postgres_bytes_per_run", "redis_bytes_per_event", "redis_bytes_per_run_state",
            "run_state_ttl_s", "analytics_rows_per_run", "worker_most_runs_at_once",
            "worker_rss_mib_before", "worker_rss_mib_peak", "clients_cpu_ms_per_run",
            "machine_busy_percent", "load"]
    print(f"\n{'runs, one worker':<36}" + "".join(f"{n:>18}" for n in results))
    print(f"{'runs at once':<36}" + "".join(f"{r['runs']:>18,.0f}" for r in results.values()))
    for key in keys:
        print(f"{key:<36}" + "".join(f"{r[key]:>18,.2f}" for r in results.values()))
    spend, arithmetic = results["spend"], results["arithmetic"]
    m = bench.measured
    return Measured(
        backend_cpu_ms_per_delivery=max(v for k, v in m.items()
                                        if k.startswith("backend_cpu_ms_per_delivery")),
        backend_rss_kib_per_socket=m["backend_rss_kib_per_socket"],
        backend_idle_cpu_ms_per_s_per_1000_sockets=m["backend_idle_cpu_ms_per_s_per_1000_sockets"],
        backend_base_rss_mib=m["backend_base_rss_mib"],
        backend_cpu_ms_per_run=spend["backend_cpu_ms_per_run"],
        worker_cpu_ms_per_run=spend["worker_cpu_ms_per_run"],
        worker_rss_kib_per_concurrent_run=(bench.worker_peak_rss - bench.worker_start_rss)
        / max(r["worker_most_runs_at_once"] for r in results.values()),
        worker_base_rss_mib=bench.worker_start_rss / 1024,
        redis_commands_per_run=spend["redis_commands_per_run"],
        redis_cpu_ms_per_run=spend["redis_cpu_ms_per_run"],
        redis_bytes_per_event=spend["redis_bytes_per_event"],
        redis_bytes_per_run_state=spend["redis_bytes_per_run_state"],
        postgres_xacts_per_run=max(spend["postgres_xacts_per_run"],
                                   arithmetic["postgres_xacts_per_run"]),
        postgres_cpu_ms_per_run=spend["postgres_cpu_ms_per_run"],
        postgres_bytes_per_run=spend["postgres_bytes_per_run"],
        analytics_rows_per_run=spend["analytics_rows_per_run"],
        clickhouse_rows_per_s=m["clickhouse_rows_per_s"])


def print_plan(measured: Measured, assumptions: Assumptions) -> None:
    print(f"\n{measured}\n{assumptions}\n")
    for s in plan(measured, assumptions):
        print(f"{s.what:<44}{s.arithmetic:<70}{s.value:>14,.1f} {s.unit}")


async def main_async(stack: LocalStack, quick: bool) -> None:
    bench = Bench(stack, quick)
    await bench.open()
    try:
        await bench.measure_background()
        print("delivery", flush=True)
        await bench.delivery()
        await bench.idle_sockets()
        results = await bench.workloads()
        print("ClickHouse ingest", flush=True)
        await bench.ingest()
        measured = _report(bench, results)
        print_plan(measured, Assumptions())
    finally:
        await bench.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        config = StackConfig.for_tests(Path(tmp), env={
            "WORKER_CONCURRENCY": "1000", "BACKEND_WS_SEND_QUEUE": "20000",
            "BACKEND_WS_MAX_CONNECTIONS_PER_USER": "200",
            "BACKEND_USAGE_RECORDS_PER_MINUTE": "100000000"})
        with LocalStack(config) as stack:
            asyncio.run(main_async(stack, args.quick))


if __name__ == "__main__":
    main()
