"""What every scenario shares: where the stack answers, what a scenario records,
and the few client moves (timed connect, reconnect and resume) that several need.

A scenario is an ``async`` function of a :class:`Context`. It writes measures and
failures into ``ctx.result``; the verdict against the thresholds is computed by
the suite afterwards, so a scenario cannot forget a limit.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.events import parse_timestamp
from e2e.client import ChatClient, EventSocket, Received
from e2e.drivers import Shape, StackDriver
from e2e.measure import latency_metrics, thin
from e2e.thresholds import Check
from servicekit.redisclient import make_redis
from servicekit.rediskeys import lease_key

__all__ = ["PASSWORD", "Context", "Scenario", "ScenarioResult", "Target", "delivery_ms",
           "eventually", "lease_holder", "reconnect_and_resume", "unique_email"]

PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Target:
    auth_url: str
    backend_url: str
    ws_url: str


@dataclass
class ScenarioResult:
    """A scenario's record: failures it saw, measures, and what the report draws."""

    name: str
    failures: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: raw values behind percentiles (thinned for the report): run_ms, ws_connect_ms …
    samples: dict[str, list[float]] = field(default_factory=dict)
    #: time series, x in seconds since the scenario started: events_per_s, rss_mb:<svc>
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    #: faults and recoveries: {fault, at_s, recovered_s, duration_ms, ok}
    timeline: list[dict[str, Any]] = field(default_factory=list)
    #: measures this driver cannot take (the report says so; their limits are skipped)
    unmeasurable: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    started_at: str = ""
    duration_ms: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures and all(c.passed for c in self.checks)

    def expect(self, condition: bool, failure: str) -> bool:
        if not condition:
            self.failures.append(failure)
        return condition

    def sample(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)

    def count(self, name: str, by: float = 1) -> None:
        self.metrics[name] = self.metrics.get(name, 0) + by

    def error(self, message: str) -> None:
        """An unexpected error: counted in ``errors`` (a limit) and listed."""
        self.count("errors")
        self.failures.append(message)

    def finish(self) -> None:
        """Percentiles of every sample list, then thin the lists for the report."""
        for name, values in self.samples.items():
            self.metrics.update(latency_metrics(name, values))
            self.samples[name] = [round(v, 3) for v in thin(values)]
        self.metrics.setdefault("errors", 0)


@dataclass
class Context:
    driver: StackDriver
    settings: dict[str, Any]
    result: ScenarioResult
    progress: Callable[[str], None] = lambda _: None
    started: float = field(default_factory=time.monotonic)

    def client(self, replica: int = 1, timeout: float = 30.0) -> ChatClient:
        return ChatClient(self.driver.auth_url, self.driver.backend_url(replica),
                          timeout=timeout)

    def say(self, message: str) -> None:
        self.progress(f"{self.result.name}: {message}")

    def since(self, at: float) -> float:
        """Seconds from the scenario's start to the monotonic time ``at``."""
        return round(at - self.started, 3)

    async def connect(self, client: ChatClient, replica: int = 1, *,
                      use_ticket: bool = True,
                      resume: dict[str, Any] | None = None) -> EventSocket:
        """A socket to ``replica``, its connect time (connect + auth + welcome) sampled."""
        started = time.monotonic()
        socket = await client.connect(self.driver.ws_url(replica), use_ticket=use_ticket,
                                      resume=resume)
        self.result.sample("ws_connect_ms", (time.monotonic() - started) * 1000)
        return socket


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    run: Callable[[Context], Awaitable[None]]
    #: the stack this scenario needs, from its settings
    needs: Callable[[dict[str, Any]], Shape] = lambda _: Shape()


def unique_email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


async def eventually(probe: Callable[[], Awaitable[bool]], timeout: float,
                     interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe():
            return True
        await asyncio.sleep(interval)
    return False


async def lease_holder(redis_url: str, run_id: str, *, timeout: float = 10.0,
                       cluster: bool = False) -> str:
    """The id of the worker running ``run_id``, from its lease in Redis: the one
    thing a scenario reads outside HTTP and WebSocket, to know which worker to kill."""
    redis = make_redis(redis_url, cluster=cluster)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            holder = await redis.get(lease_key(run_id))
            if holder is not None:
                return holder.decode() if isinstance(holder, bytes) else str(holder)
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no worker took {run_id} within {timeout:.0f} s")
    finally:
        await redis.aclose()


def _parse_ts(text: str) -> float:
    return parse_timestamp(text).timestamp()


def delivery_ms(frames: list[Received]) -> list[float]:
    """Per event: arrival (wall clock) minus the event's ``ts``, in ms. The same
    clock on one machine; events have millisecond timestamps, so ±1 ms."""
    return [(r.wall - _parse_ts(r.frame["ts"])) * 1000 for r in frames
            if "seq" in r.frame and isinstance(r.frame.get("ts"), str)]


async def reconnect_and_resume(ctx: Context, client: ChatClient, after: int, epoch: str,
                               replicas: Callable[[], list[int]], *,
                               timeout: float = 30.0, use_ticket: bool = True,
                               ) -> tuple[EventSocket, int, float]:
    """Dial the given replicas in turn every 100 ms until one answers, then resume
    after ``after``: what a client behind a load balancer does. Returns the socket,
    the attempts it took and the monotonic time the server confirmed the resume."""
    deadline = time.monotonic() + timeout
    attempts = 0
    last: Exception | None = None
    while True:
        for replica in replicas():
            attempts += 1
            try:
                socket = await ctx.connect(client, replica, use_ticket=use_ticket,
                                           resume={"after": after, "epoch": epoch})
            except Exception as exc:  # refused, reset, handshake or ticket failed: retry
                last = exc
                continue
            answer = await socket.wait_for(
                lambda f: f.get("type") in ("resumed", "resync_required"))
            if answer.get("type") != "resumed":
                raise ConnectionError(f"resume after {after} answered {answer}")
            return socket, attempts, time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no replica accepted a socket within {timeout:.0f}s "
                               f"({attempts} attempts; last: {last!r})")
        await asyncio.sleep(0.1)
