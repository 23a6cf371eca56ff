"""Scenario 3, failure recovery: five faults in the middle of a run, each timed
from the fault until service is back, each checked for lost and doubled events.

- ``socket_drop``: the client's network drops; it reconnects and resumes.
- ``backend_kill``: kill -9 of the backend its socket is on; the backend is
  restarted and the client, redialling, resumes on it. The run goes on meanwhile:
  it runs on a worker.
- ``redis_restart``: Redis restarts with its data; the socket stays open and live
  events flow again.
- ``redis_failover`` (in its place on a Redis Cluster): kill -9 of the master that
  holds the user's slot; its replica is promoted, the run goes on (its emits wait
  and retry meanwhile), and the socket gets every event, or, should the replica
  have lacked events its master had acknowledged, a ``resync_required`` and every
  event after it: never a silent hole. The old master rejoins as a replica.
- ``worker_kill``: kill -9 of the worker running a run: the run ends
  ``agent_failed`` (``worker_lost``) and another worker (or the restarted one)
  serves the next run.
- ``auth_down``: the auth service dies; existing sessions go on (tokens are
  verified offline), logins fail fast, and work again once auth is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from e2e.checks import check_all, check_run_invariants, delivery_counts
from e2e.client import ApiError, ChatClient, EventSocket
from e2e.scenarios.base import (
    PASSWORD,
    Context,
    lease_holder,
    reconnect_and_resume,
    unique_email,
)
from servicekit.rediskeys import UserKeys

__all__ = ["failure_recovery", "faults"]


def _ticks(ctx: Context) -> tuple[int, int]:
    return int(ctx.settings["ticks"]), int(ctx.settings["tick_ms"])


def _recovered(ctx: Context, fault: str, at: float, back: float | None, *,
               attempts: int = 0, detail: str = "") -> None:
    """Record a fault on the timeline and its ``<fault>_recovery_ms`` measure."""
    entry: dict[str, object] = {"fault": fault, "at_s": ctx.since(at), "ok": back is not None,
                                "attempts": attempts, "detail": detail}
    if back is not None:
        duration = (back - at) * 1000
        entry |= {"recovered_s": ctx.since(back), "duration_ms": round(duration, 1)}
        ctx.result.metrics[f"{fault}_recovery_ms"] = duration
        ctx.say(f"{fault}: back after {duration:.0f} ms"
                + (f" ({attempts} attempts)" if attempts else ""))
    ctx.result.timeline.append(entry)
    ctx.result.count("recovery_attempts", attempts)


def _account(ctx: Context, fault: str, events: list[dict[str, Any]], run_id: str,
             expected: int, user_id: str, first: int) -> None:
    """Lost and doubled events of a run that crossed a fault, and the invariants."""
    lost, doubled = delivery_counts(events, run_id, expected)
    ctx.result.count("lost_events", lost)
    ctx.result.count("duplicate_events", doubled)
    ctx.result.count("events_received", len(events))
    ctx.result.count("events_expected", expected)
    for problem in check_all(events, {run_id}, user_id, first=first):
        ctx.result.failures.append(f"{fault}: {problem}")


async def _signed_in(ctx: Context, tag: str) -> tuple[ChatClient, EventSocket]:
    client = ctx.client()
    await client.signup(unique_email(tag), PASSWORD)
    return client, await ctx.connect(client)


async def _stream(ctx: Context, client: ChatClient, socket: EventSocket, ticks: int,
                  tick_ms: int, after_tick: int = 30) -> str:
    """Start a ticker run and return once ``after_tick`` deltas arrived: mid-run."""
    thread = await client.create_thread("recovery")
    answer = await socket.request({"type": "start_run", "thread_id": thread["id"],
                                   "agent": "ticker",
                                   "input": f"ticks {ticks} every {tick_ms}ms"})
    if answer.get("type") != "run_accepted":
        raise RuntimeError(f"start_run answered {answer}")
    run_id: str = answer["run_id"]
    await socket.wait_for(lambda f: f.get("run_id") == run_id and f.get("type") == (
        "partial_result") and f["payload"]["delta"].startswith(f"tick {after_tick} "),
        timeout=30)
    return run_id


async def _run_status(ctx: Context, client: ChatClient, fault: str, run_id: str,
                      expected: str) -> None:
    started = time.monotonic()
    run = await client.wait_run(run_id, timeout=40)
    ctx.result.metrics[f"{fault}_run_record_ms"] = (time.monotonic() - started) * 1000
    ctx.result.expect(run["status"] == expected,
                      f"{fault}: {run_id} is {run['status']} over REST, expected {expected}")


async def _resumed_to_the_end(ctx: Context, fault: str, client: ChatClient, first: EventSocket,
                              second: EventSocket, run_id: str, ticks: int) -> None:
    """The resumed socket sees the run to its end; with the first socket's events,
    nothing is lost or doubled; the run's record agrees."""
    await second.wait_terminal(run_id, timeout=60)
    _account(ctx, fault, first.events + second.events, run_id, ticks + 3,
             client.user["id"], first.welcome["last_seq"] + 1)
    await _run_status(ctx, client, fault, run_id, "succeeded")


async def socket_drop(ctx: Context) -> None:
    ticks, tick_ms = _ticks(ctx)
    client, first = await _signed_in(ctx, "drop")
    second: EventSocket | None = None
    try:
        run_id = await _stream(ctx, client, first, ticks, tick_ms)
        await first.abort()
        dropped = time.monotonic()
        second, attempts, back = await reconnect_and_resume(
            ctx, client, first.events[-1]["seq"], first.welcome["epoch"], lambda: [1])
        _recovered(ctx, "socket_drop", dropped, back, attempts=attempts)
        await _resumed_to_the_end(ctx, "socket_drop", client, first, second, run_id, ticks)
    finally:
        if second is not None:
            await second.close()
        await client.aclose()


async def backend_kill(ctx: Context) -> None:
    ticks, tick_ms = _ticks(ctx)
    name = ctx.driver.backend_names()[0]
    client, first = await _signed_in(ctx, "backendkill")
    second: EventSocket | None = None
    try:
        run_id = await _stream(ctx, client, first, ticks, tick_ms)
        await ctx.driver.kill(name)
        killed = time.monotonic()
        restart = asyncio.create_task(ctx.driver.start_service(name))
        try:
            await first.wait_closed(timeout=15)  # frames in flight still arrive first
            second, attempts, back = await reconnect_and_resume(
                ctx, client, first.events[-1]["seq"], first.welcome["epoch"], lambda: [1],
                timeout=60)
        finally:
            ctx.result.metrics["backend_restart_s"] = await restart
        _recovered(ctx, "backend_kill", killed, back, attempts=attempts,
                   detail=f"{name} killed and restarted")
        await _resumed_to_the_end(ctx, "backend_kill", client, first, second, run_id, ticks)
    finally:
        if second is not None:
            await second.close()
        await first.close()
        await client.aclose()


async def redis_restart(ctx: Context) -> None:
    ticks, tick_ms = _ticks(ctx)
    client, socket = await _signed_in(ctx, "redisrestart")
    try:
        run_id = await _stream(ctx, client, socket, ticks, tick_ms)
        # stopped, then started: while Redis is down no event can be emitted, so every
        # frame after `seen` came after the stop (a restart's stop and start are one
        # step, and on a slow engine the run could end before it returned)
        await ctx.driver.stop_service("redis")
        stopped = time.monotonic()
        seen = len(socket.frames)
        ctx.result.metrics["redis_restart_s"] = await ctx.driver.start_service("redis")
        await socket.wait_for(lambda f: f.get("run_id") == run_id, start=seen, timeout=30)
        back = next(r.at for r in socket.frames[seen:] if r.frame.get("run_id") == run_id)
        _recovered(ctx, "redis_restart", stopped, back, detail="restarted with its data")
        await socket.wait_terminal(run_id, timeout=60)
        _account(ctx, "redis_restart", socket.events, run_id, ticks + 3, client.user["id"],
                 socket.welcome["last_seq"] + 1)
        await _run_status(ctx, client, "redis_restart", run_id, "succeeded")
    finally:
        await socket.close()
        await client.aclose()


async def redis_failover(ctx: Context) -> None:
    ticks, tick_ms = _ticks(ctx)
    client, socket = await _signed_in(ctx, "failover")
    node = ""
    try:
        run_id = await _stream(ctx, client, socket, ticks, tick_ms)
        node = ctx.driver.redis_master_of(UserKeys(client.user["id"]).history)
        await ctx.driver.kill(node)
        killed = time.monotonic()
        seen = len(socket.frames)

        await socket.wait_terminal(run_id, timeout=60)
        # events in flight still arrive after the kill; then the run's emits wait for
        # the promotion: service is back with the first event after that pause
        arrivals = [killed] + [r.at for r in socket.frames[seen:]
                               if r.frame.get("run_id") == run_id
                               or r.frame.get("type") == "resync_required"]
        pause = max(range(1, len(arrivals)), key=lambda i: arrivals[i] - arrivals[i - 1],
                    default=None)
        _recovered(ctx, "redis_failover", killed, None if pause is None else arrivals[pause],
                   detail=f"{node}, the master of the user's slot, killed; its replica "
                          "promoted")
        resyncs = [r.frame for r in socket.frames if r.frame.get("type") == "resync_required"]
        ctx.result.count("failover_resyncs", len(resyncs))
        if not resyncs:  # the replica had every event: the client lost nothing
            _account(ctx, "redis_failover", socket.events, run_id, ticks + 3,
                     client.user["id"], socket.welcome["last_seq"] + 1)
        else:  # it reloads over REST; what follows the resync comes whole and in order
            last = resyncs[-1]
            ctx.say(f"redis_failover: resync_required at seq {last['last_seq']}")
            later = [e for e in socket.events if e.get("epoch") == last["epoch"]
                     and e["seq"] > last["last_seq"]]
            seqs = [e["seq"] for e in later]
            ctx.result.expect(seqs == list(range(last["last_seq"] + 1,
                                                 last["last_seq"] + 1 + len(seqs))),
                              f"redis_failover: events after the resync have gaps: {seqs}")
        await _run_status(ctx, client, "redis_failover", run_id, "succeeded")
    finally:
        await socket.close()
        await client.aclose()
        if node:  # back, as a replica of the promoted one
            ctx.result.metrics["redis_node_rejoin_s"] = await ctx.driver.start_service(node)


async def worker_kill(ctx: Context) -> None:
    client, socket = await _signed_in(ctx, "workerkill")
    name: str | None = None
    try:
        run_id = await _stream(ctx, client, socket, 200, 100, after_tick=3)
        holder = await lease_holder(ctx.driver.redis_url, run_id,
                                    cluster=ctx.driver.redis_cluster)
        name = ctx.driver.worker_service(holder)
        if name is None:
            raise RuntimeError(f"the lease holder {holder!r} is none of "
                               f"{ctx.driver.worker_names()}")
        await ctx.driver.kill(name)
        killed = time.monotonic()
        others = [w for w in ctx.driver.worker_names() if w != name]
        if not others:
            ctx.result.metrics["worker_restart_s"] = await ctx.driver.start_service(name)
        thread = await client.create_thread("after the kill")
        answer = await socket.request({"type": "start_run", "thread_id": thread["id"],
                                       "input": "what is 6 * 7"})
        done = await socket.wait_terminal(answer["run_id"], timeout=30)
        served = done["type"] == "agent_completed" and "= 42" in done["payload"]["result"]
        ctx.result.expect(served, f"worker_kill: the next run ended {done['type']}: "
                                  f"{done['payload']}")
        _recovered(ctx, "worker_kill", killed, time.monotonic() if served else None,
                   detail=f"{name} killed; served by {', '.join(others) or 'its restart'}")
        lost = await socket.wait_terminal(run_id, timeout=30)
        at = next(r.at for r in socket.frames if r.frame is lost)
        ctx.result.metrics["worker_lost_ms"] = (at - killed) * 1000
        ctx.result.timeline.append({
            "fault": "worker_kill: run declared lost", "at_s": ctx.since(killed),
            "recovered_s": ctx.since(at), "duration_ms": round((at - killed) * 1000, 1),
            "ok": lost["type"] == "agent_failed", "detail": "until agent_failed (worker_lost)"})
        ctx.result.expect(lost["type"] == "agent_failed"
                          and lost["payload"].get("cause") == "worker_lost",
                          f"worker_kill: the run ended {lost['type']} {lost['payload']}, "
                          "expected agent_failed (worker_lost)")
        for problem in check_run_invariants(socket.events, [run_id, answer["run_id"]]):
            ctx.result.failures.append(f"worker_kill: {problem}")
        await _run_status(ctx, client, "worker_kill", run_id, "failed")
    finally:
        await socket.close()
        await client.aclose()
        if name is not None and not ctx.driver.is_running(name):
            ctx.result.metrics["worker_restart_s"] = await ctx.driver.start_service(name)


async def _login_outcome(client: ChatClient) -> str:
    """How a login answers while auth is down: ``"503"``, ``"refused"`` or ``"ok"``."""
    try:
        await client.login(client.user["email"], PASSWORD)
    except ApiError as exc:
        return str(exc.status)
    except httpx.TransportError:
        return "refused"
    return "ok"


async def auth_down(ctx: Context) -> None:
    client, socket = await _signed_in(ctx, "authdown")
    by_token: EventSocket | None = None
    try:
        await ctx.driver.kill("auth")
        killed = time.monotonic()
        thread = await client.create_thread("while auth is down")  # verified offline
        answer = await socket.request({"type": "start_run", "thread_id": thread["id"],
                                       "input": "what is 9 * 9"})
        done = await socket.wait_terminal(answer["run_id"], timeout=30)
        ctx.result.expect("= 81" in done["payload"].get("result", ""),
                          f"auth_down: an existing session's run ended {done}")
        by_token = await ctx.connect(client, use_ticket=False)
        thread = await client.create_thread("a new socket while auth is down")
        run = await client.start_run(thread["id"], "ticks 10 every 5ms", agent="ticker")
        await by_token.wait_terminal(run["id"], timeout=30)
        ctx.result.metrics["session_during_outage_ms"] = (time.monotonic() - killed) * 1000
        started = time.monotonic()
        outcome = await _login_outcome(client)
        ctx.result.metrics["login_refused_ms"] = (time.monotonic() - started) * 1000
        ctx.result.expect(outcome in ("503", "refused"),
                          f"auth_down: a login while auth is down answered {outcome}")
        ctx.result.notes.append(
            f"auth_down: a login while auth was down: {outcome} "
            + ("(nothing listens on auth's port; a proxy in front of it answers 503)"
               if outcome == "refused" else ""))
        restarted = time.monotonic()
        ctx.result.timeline.append({
            "fault": "auth_down: outage", "at_s": ctx.since(killed),
            "recovered_s": ctx.since(restarted), "duration_ms": round((restarted - killed) * 1000),
            "ok": True, "detail": "existing sessions went on; logins failed fast"})
        ctx.result.metrics["auth_restart_s"] = await ctx.driver.start_service("auth")

        async def login_works() -> bool:
            return await _login_outcome(client) == "ok"

        back = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if await login_works():
                back = time.monotonic()
                break
            await asyncio.sleep(0.1)
        _recovered(ctx, "auth_down", restarted, back,
                   detail="from auth's start to the first login answered")
        ctx.result.expect(bool(await client.ws_ticket()), "auth_down: no ticket after auth")
        ctx.result.metrics["auth_outage_s"] = restarted - killed
    finally:
        if by_token is not None:
            await by_token.close()
        await socket.close()
        await client.aclose()
        if not ctx.driver.is_running("auth"):
            await ctx.driver.start_service("auth")


def faults(ctx: Context) -> dict[str, Callable[[Context], Awaitable[None]]]:
    """The faults in turn: on a Redis Cluster a master's failover takes the place of
    the one Redis's restart."""
    redis = (("redis_failover", redis_failover) if ctx.driver.redis_cluster
             else ("redis_restart", redis_restart))
    return dict([("socket_drop", socket_drop), ("backend_kill", backend_kill), redis,
                 ("worker_kill", worker_kill), ("auth_down", auth_down)])


async def _restore(ctx: Context) -> None:
    """Bring back whatever a failed fault left down, so the next fault starts whole."""
    for name in [*ctx.driver.redis_names(), "auth", *ctx.driver.backend_names(),
                 *ctx.driver.worker_names()]:
        if not ctx.driver.is_running(name):
            ctx.say(f"restoring {name}")
            await ctx.driver.start_service(name)


async def failure_recovery(ctx: Context) -> None:
    """Each fault in turn; one that breaks is recorded and the next still runs."""
    # one Redis restarts; a cluster's master fails over: the other measure is not taken
    ctx.result.unmeasurable.append("redis_restart_recovery_ms" if ctx.driver.redis_cluster
                                   else "redis_failover_recovery_ms")
    for fault, run in faults(ctx).items():
        ctx.say(f"{fault} …")
        try:
            await run(ctx)
        except Exception as exc:
            ctx.result.error(f"{fault}: {exc!r}")
            if not any(e["fault"] == fault for e in ctx.result.timeline):
                ctx.result.timeline.append({"fault": fault, "at_s": ctx.since(time.monotonic()),
                                            "ok": False, "detail": repr(exc)[:200]})
            await _restore(ctx)
    expected = ctx.result.metrics.get("events_expected", 0)
    lost = ctx.result.metrics.get("lost_events", 0)
    ctx.result.metrics["delivery_rate"] = (expected - lost) / expected if expected else 0
    ctx.result.metrics.setdefault("lost_events", 0)
    ctx.result.metrics.setdefault("duplicate_events", 0)
