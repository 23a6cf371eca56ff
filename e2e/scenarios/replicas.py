"""Scenario 5, multi-replica: two backends and two workers behave as one service.

Each user has a socket on backend 2 and one on backend 1, and starts its run over
REST through backend 1: both sockets must receive the same events. Then backend
2 is killed; its clients redial, land on backend 1, resume, and end up with every
event exactly once. Backend 2 comes back and serves sockets again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from e2e.checks import check_all, delivery_counts
from e2e.client import ChatClient, EventSocket
from e2e.drivers import Shape
from e2e.scenarios.base import PASSWORD, Context, reconnect_and_resume, unique_email

__all__ = ["multi_replica"]

NEEDS = Shape(backends=2, workers=2)


@dataclass
class _User:
    client: ChatClient  # REST through backend 1
    near: EventSocket | None = None  # on backend 1
    far: EventSocket | None = None  # on backend 2, killed
    moved: EventSocket | None = None  # far's successor on backend 1
    run_id: str = ""
    resumed_at: float | None = None
    attempts: int = 0
    extra: list[EventSocket] = field(default_factory=list)


async def _prepare(ctx: Context, number: int, text: str) -> _User:
    user = _User(ctx.client(replica=1))
    await user.client.signup(unique_email(f"replica{number}"), PASSWORD)
    user.far = await ctx.connect(user.client, 2)
    user.near = await ctx.connect(user.client, 1)
    thread = await user.client.create_thread("across replicas")
    user.run_id = (await user.client.start_run(thread["id"], text, agent="ticker"))["id"]
    await user.far.wait_for(lambda f: f.get("run_id") == user.run_id and f.get("type") == (
        "partial_result") and f["payload"]["delta"].startswith("tick 30 "), timeout=30)
    return user


async def _move(ctx: Context, user: _User) -> None:
    """Redial backend 1 and resume after the last event the dead socket delivered:
    only once that socket has ended, since frames already in flight still arrive."""
    assert user.far is not None
    await user.far.wait_closed(timeout=15)
    with_seq = user.far.events
    after = with_seq[-1]["seq"] if with_seq else user.far.welcome["last_seq"]
    user.moved, user.attempts, user.resumed_at = await reconnect_and_resume(
        ctx, user.client, after, user.far.welcome["epoch"], lambda: [1], timeout=30)


async def _served_again(ctx: Context) -> None:
    """After its restart, a socket on backend 2 receives a run started via backend 1."""
    async with ctx.client(replica=1) as client:
        await client.signup(unique_email("replica-back"), PASSWORD)
        socket = await ctx.connect(client, 2)
        try:
            thread = await client.create_thread()
            run = await client.start_run(thread["id"], "what is 2 * 21")
            done = await socket.wait_terminal(run["id"], timeout=30)
            ctx.result.expect(done["payload"].get("result") == "2 * 21 = 42",
                              f"backend 2 after its restart: {done}")
        finally:
            await socket.close()


async def multi_replica(ctx: Context) -> None:
    result = ctx.result
    if ctx.driver.shape.backends < 2:
        result.error(f"needs 2 backends, the stack has {ctx.driver.shape.backends}")
        return
    ticks, tick_ms = int(ctx.settings["ticks"]), int(ctx.settings["tick_ms"])
    count = int(ctx.settings["users"])
    text = f"ticks {ticks} every {tick_ms}ms"
    far_name = ctx.driver.backend_names()[1]
    users = await asyncio.gather(*(_prepare(ctx, n, text) for n in range(count)))
    try:
        await ctx.driver.kill(far_name)
        killed = time.monotonic()
        ctx.say(f"{far_name} killed under {count} streaming runs")
        await asyncio.gather(*(_move(ctx, u) for u in users))
        back = max(u.resumed_at or killed for u in users)
        result.metrics["failover_ms"] = (back - killed) * 1000
        result.metrics["recovery_attempts"] = sum(u.attempts for u in users)
        result.timeline.append({"fault": f"{far_name} killed", "at_s": ctx.since(killed),
                                "recovered_s": ctx.since(back),
                                "duration_ms": round((back - killed) * 1000, 1), "ok": True,
                                "detail": f"{count} clients resumed on backend 1"})
        for user in users:
            assert user.moved is not None and user.near is not None
            await user.moved.wait_terminal(user.run_id, timeout=60)
            await user.near.wait_terminal(user.run_id, timeout=60)
        restarted = time.monotonic()
        result.metrics["backend_restart_s"] = await ctx.driver.start_service(far_name)
        result.timeline.append({"fault": f"{far_name} restarted", "at_s": ctx.since(restarted),
                                "recovered_s": ctx.since(time.monotonic()),
                                "duration_ms": round(result.metrics["backend_restart_s"] * 1000),
                                "ok": True, "detail": "started and ready again"})
        await _served_again(ctx)
        stored = await asyncio.gather(*(u.client.run_events(u.run_id) for u in users))
        _account(ctx, users, ticks + 3, sum(len(s) for s in stored))
    finally:
        for user in users:
            for socket in (user.near, user.far, user.moved):
                if socket is not None:
                    await socket.close()
            await user.client.aclose()
        if not ctx.driver.is_running(far_name):
            await ctx.driver.start_service(far_name)


def _account(ctx: Context, users: list[_User], expected: int, stored: int) -> None:
    """Every event of each run exactly once on the moved client, the same list as
    the client that stayed on backend 1, against what the history stored."""
    result = ctx.result
    received = lost = doubled = 0
    for user in users:
        assert user.far is not None and user.moved is not None and user.near is not None
        uid = user.client.user["id"]
        moved = user.far.events + user.moved.events
        for label, events in (("moved client", moved), ("backend 1 client", user.near.events)):
            for problem in check_all(events, {user.run_id}, uid, first=1):
                result.failures.append(f"{label} of {uid}: {problem}")
        run_lost, run_doubled = delivery_counts(moved, user.run_id, expected)
        lost, doubled = lost + run_lost, doubled + run_doubled
        received += len({e["seq"] for e in moved})
        result.expect([e["seq"] for e in moved] == [e["seq"] for e in user.near.events],
                      f"{uid}: the two replicas' clients saw different events")
    result.expect(stored == expected * len(users),
                  f"the history holds {stored} events of the runs, expected "
                  f"{expected * len(users)}")
    result.metrics |= {"events_sent": stored, "events_received": received,
                       "lost_events": lost, "duplicate_events": doubled,
                       "delivery_rate": received / stored if stored else 0.0}
