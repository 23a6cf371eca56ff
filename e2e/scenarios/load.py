"""Scenario 4, load: hundreds of runs streaming at once for a minute, every event
delivered, agents answering quickly, memory flat.

``runs`` ticker runs over ``users`` users (one socket each, backends in turn) all
stream a delta every ``tick_ms``. They are sized to last ``duration_s`` plus a
ramp, and the throughput is counted only over the steady window, from the last
run's ``agent_started`` to the first run's end, when every run is active at once;
so a run that waited in the queue shortens the window and fails ``min_steady_s``.
Delivery is what the sockets received against what the history stored.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

from e2e.checks import check_all, check_isolation
from e2e.client import ChatClient, EventSocket, Received
from e2e.drivers import Shape
from e2e.measure import per_second
from e2e.scenarios.base import PASSWORD, Context, delivery_ms, unique_email

__all__ = ["RssSampler", "load", "load_needs"]

RAMP_S = 5  # extra run length that covers the stagger of starting every run


def load_needs(settings: dict[str, Any]) -> Shape:
    """Two workers, with room for every run at once (and a little slack)."""
    runs = int(settings["runs"])
    return Shape(workers=2, worker_concurrency=max(50, math.ceil(runs / 2) + 10))


@dataclass
class RssSampler:
    """Samples the driver's memory figures every ``interval`` seconds."""

    ctx: Context
    interval: float = 1.0
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def sample(self) -> dict[str, float]:
        figures = await asyncio.to_thread(self.ctx.driver.rss_mb)
        self.samples.append((self.ctx.since(time.monotonic()), figures))
        return figures

    async def _loop(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def series(self) -> dict[str, list[tuple[float, float]]]:
        out: dict[str, list[tuple[float, float]]] = {}
        for at, figures in self.samples:
            for service, mib in figures.items():
                out.setdefault(f"rss_mb:{service}", []).append((at, round(mib, 2)))
        return out


@dataclass
class _User:
    client: ChatClient
    socket: EventSocket | None = None
    threads: list[str] = field(default_factory=list)
    runs: dict[str, float] = field(default_factory=dict)  # run id → start_run sent at


async def _prepare(ctx: Context, number: int, threads: int, gate: asyncio.Semaphore) -> _User:
    async with gate:
        user = _User(ctx.client(timeout=60))
        await user.client.signup(unique_email(f"load{number}"), PASSWORD)
        user.socket = await ctx.connect(user.client, number % ctx.driver.shape.backends + 1)
        for n in range(threads):
            user.threads.append((await user.client.create_thread(f"load {n}"))["id"])
        return user


async def _start(ctx: Context, user: _User, thread_id: str, text: str) -> None:
    assert user.socket is not None
    sent = time.monotonic()
    answer = await user.socket.request({"type": "start_run", "thread_id": thread_id,
                                        "agent": "ticker", "input": text}, timeout=60)
    if answer.get("type") != "run_accepted":
        ctx.result.error(f"start_run answered {answer}")
        return
    user.runs[answer["run_id"]] = sent


async def _stored(user: _User, run_id: str, gate: asyncio.Semaphore) -> int:
    assert user.socket is not None
    async with gate:
        events = await user.client.run_events(run_id, after=user.socket.welcome["last_seq"])
        return len(events)


async def load(ctx: Context) -> None:
    settings, result = ctx.settings, ctx.result
    users_n, runs_n = int(settings["users"]), int(settings["runs"])
    duration, tick_ms = float(settings["duration_s"]), int(settings["tick_ms"])
    ticks = math.ceil((duration + RAMP_S) * 1000 / tick_ms)
    text = f"ticks {ticks} every {tick_ms}ms"
    gate = asyncio.Semaphore(25)
    shares = [runs_n // users_n + (1 if n < runs_n % users_n else 0) for n in range(users_n)]
    ctx.say(f"{users_n} users, {runs_n} runs of {ticks} ticks every {tick_ms} ms")
    users = await asyncio.gather(*(_prepare(ctx, n, shares[n], gate) for n in range(users_n)))
    sampler = RssSampler(ctx)
    try:
        before = await sampler.sample()
        sampler.start()
        started = time.monotonic()
        await asyncio.gather(*(_start(ctx, u, t, text) for u in users for t in u.threads))
        result.metrics["runs_started"] = sum(len(u.runs) for u in users)
        ctx.say(f"{int(result.metrics['runs_started'])} runs accepted in "
                f"{time.monotonic() - started:.1f} s; streaming")
        deadline = ticks * tick_ms / 1000 + 90
        await asyncio.gather(*(u.socket.wait_terminals(set(u.runs), timeout=deadline)
                               for u in users if u.socket))
        ended = time.monotonic()
        await asyncio.sleep(2)  # let the services settle before the last memory sample
        after = await sampler.sample()
    finally:
        await sampler.stop()
        for user in users:
            if user.socket is not None:
                await user.socket.close()
    try:
        _measure(ctx, users, started, ended, ticks)
        sent = await asyncio.gather(*(_stored(u, r, gate) for u in users for r in u.runs))
        result.metrics["events_sent"] = sum(sent)
        received = result.metrics["events_received_unique"]
        result.metrics["delivery_rate"] = received / sum(sent) if sum(sent) else 0.0
    finally:
        for user in users:
            await user.client.aclose()
    _memory(ctx, sampler, before, after)


def _measure(ctx: Context, users: list[_User], started: float, ended: float,
             ticks: int) -> None:
    result = ctx.result
    firsts, lasts, arrivals = [], [], []
    unique = 0
    for user in users:
        assert user.socket is not None
        frames: dict[str, list[Received]] = {r: [] for r in user.runs}
        for received in user.socket.frames:
            run = received.frame.get("run_id")
            if run in frames and "seq" in received.frame:
                frames[run].append(received)
                arrivals.append(received.at)
        for run_id, sent in user.runs.items():
            got = frames[run_id]
            if not got:
                result.failures.append(f"{run_id}: no event received")
                continue
            firsts.append(got[0].at)
            lasts.append(got[-1].at)
            unique += len({r.frame["seq"] for r in got})
            result.sample("response_ms", (got[0].at - sent) * 1000)
            result.sample("execution_ms", (got[-1].at - got[0].at) * 1000)
            if got[-1].frame["type"] != "agent_completed" or len(got) != ticks + 3:
                result.failures.append(f"{run_id}: {len(got)} events ending "
                                       f"{got[-1].frame['type']}, expected {ticks + 3}")
        for value in delivery_ms(user.socket.frames):
            result.sample("event_latency_ms", value)
        uid = user.client.user.get("id", "?")
        result.failures += check_all(user.socket.events, set(user.runs), uid,
                                     first=user.socket.welcome["last_seq"] + 1)
        result.count("isolation_violations",
                     len(check_isolation(user.socket.events, set(user.runs), uid)))
    result.metrics.setdefault("isolation_violations", 0)
    result.metrics["events_received"] = len(arrivals)
    result.metrics["events_received_unique"] = unique
    if firsts and lasts:
        window_start, window_end = max(firsts), min(lasts)
        steady = max(0.0, window_end - window_start)
        inside = sum(window_start <= at <= window_end for at in arrivals)
        result.metrics["steady_s"] = steady
        result.metrics["events_per_s"] = inside / steady if steady else 0.0
        offset = started - ctx.started
        result.series["events_per_s"] = [(round(x + offset, 3), y) for x, y in
                                         per_second(arrivals, started, ended)]
        result.timeline += [
            {"fault": "every run active", "at_s": ctx.since(window_start),
             "recovered_s": ctx.since(window_end), "duration_ms": round(steady * 1000),
             "ok": True, "detail": "the steady window the rate is counted over"}]
    result.metrics["tools_executed"] = 0


def _memory(ctx: Context, sampler: RssSampler, before: dict[str, float],
            after: dict[str, float]) -> None:
    result = ctx.result
    if not before or not after:
        result.unmeasurable.append("rss_growth_mb")
        result.notes.append(f"memory: the {ctx.driver.kind} driver reports no RSS")
        return
    growth = {service: after[service] - before[service] for service in before
              if service in after}
    for service, mib in growth.items():
        result.metrics[f"rss_growth_mb.{service}"] = mib
    result.metrics["rss_growth_mb"] = max(growth.values())
    result.series.update(sampler.series())
    result.notes.append(f"memory: {ctx.driver.memory_source}; growth per service "
                        + ", ".join(f"{s} {m:+.1f} MB" for s, m in sorted(growth.items())))
