"""Scenario 2, concurrent users: many users at once, each with a marker only it
knows, and nobody ever sees another's.

Each user gets a random word (its marker) in its thread's title and in both of its
run inputs. Isolation is checked three ways: no event of a run that is not the
user's (routing), no frame anywhere carrying another user's marker (content), and
another user's thread, run and run events answered 404 over REST (access).
"""

from __future__ import annotations

import asyncio
import secrets
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from e2e.checks import check_all, check_isolation, check_markers
from e2e.client import ApiError, ChatClient, EventSocket
from e2e.scenarios.base import PASSWORD, Context, delivery_ms, unique_email

__all__ = ["concurrent_users", "new_marker"]

# no digits and no "x": the calculator reads digits and "x" as part of an expression
_ALPHABET = "".join(c for c in string.ascii_lowercase if c != "x")


def new_marker() -> str:
    return "zq" + "".join(secrets.choice(_ALPHABET) for _ in range(14))


@dataclass
class _User:
    number: int
    marker: str
    client: ChatClient
    socket: EventSocket | None = None
    thread_id: str = ""
    run_ids: list[str] = field(default_factory=list)
    succeeded: bool = False
    problems: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


async def _run(ctx: Context, user: _User, text: str, agent: str | None,
               expect: str) -> bool:
    assert user.socket is not None
    sent = time.monotonic()
    frame = {"type": "start_run", "thread_id": user.thread_id, "input": text}
    if agent:
        frame["agent"] = agent
    answer = await user.socket.request(frame, timeout=30)
    if answer.get("type") != "run_accepted":
        user.problems.append(f"user {user.number}: start_run answered {answer}")
        return False
    run_id = answer["run_id"]
    user.run_ids.append(run_id)
    terminal = await user.socket.wait_terminal(run_id, timeout=60)
    ctx.result.sample("run_ms", (time.monotonic() - sent) * 1000)
    first = next(r for r in user.socket.frames
                 if r.frame.get("run_id") == run_id and "seq" in r.frame)
    ctx.result.sample("response_ms", (first.at - sent) * 1000)
    result = terminal["payload"].get("result", "")
    if terminal["type"] != "agent_completed" or expect not in result:
        user.problems.append(f"user {user.number}: {run_id} ended {terminal['type']} "
                             f"with {terminal['payload']}, expected {expect!r}")
        return False
    return True


async def _act(ctx: Context, user: _User) -> None:
    """Sign up, open a socket, run an arithmetic question and a short stream."""
    client = user.client
    await client.signup(unique_email(f"user{user.number}"), PASSWORD)
    replica = user.number % ctx.driver.shape.backends + 1
    user.socket = await ctx.connect(client, replica)
    user.thread_id = (await client.create_thread(f"thread of {user.marker}"))["id"]
    a, b = 11 + user.number, 7
    ok = await _run(ctx, user, f"what is {a} * {b} {user.marker}", None, f"= {a * b}")
    ok = await _run(ctx, user, f"ticks 20 every 5ms {user.marker}", "ticker",
                    "streamed 20 ticks") and ok
    user.succeeded = ok


async def _probe(user: _User, other: _User) -> None:
    """``user`` asks for ``other``'s thread, run and run events: each must be 404."""
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("thread", lambda: user.client.thread(other.thread_id)),
        ("run", lambda: user.client.run(other.run_ids[0])),
        ("run events", lambda: user.client.run_events(other.run_ids[0]))]
    for what, call in calls:
        try:
            await call()
        except ApiError as exc:
            if exc.status != 404:
                user.problems.append(f"user {user.number} reading another's {what}: "
                                     f"HTTP {exc.status}, expected 404")
            continue
        user.violations.append(f"user {user.number} could read user {other.number}'s {what}")
    titles = [t["title"] for t in await user.client.threads()]
    if titles != [f"thread of {user.marker}"]:
        user.violations.append(f"user {user.number} lists threads {titles}")


def _check(user: _User, markers: list[str]) -> None:
    assert user.socket is not None
    events = user.socket.events
    uid = user.client.user.get("id", "?")
    isolation = check_isolation(events, set(user.run_ids), uid)
    user.violations += isolation
    user.violations += check_markers([r.frame for r in user.socket.frames], user.marker,
                                     markers)
    user.problems += [p for p in check_all(events, set(user.run_ids), uid,
                                           first=user.socket.welcome["last_seq"] + 1)
                      if p not in isolation]


async def concurrent_users(ctx: Context) -> None:
    """``users`` users at once; every one succeeds, nobody sees another's data."""
    result = ctx.result
    count = int(ctx.settings["users"])
    users = [_User(n, new_marker(), ctx.client(timeout=60)) for n in range(count)]
    ctx.say(f"{count} users sign up and run at once")
    try:
        started = time.monotonic()
        outcomes = await asyncio.gather(*(_act(ctx, u) for u in users),
                                        return_exceptions=True)
        result.metrics["all_users_done_ms"] = (time.monotonic() - started) * 1000
        for user, outcome in zip(users, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                user.succeeded = False
                result.error(f"user {user.number}: {outcome!r}")
        ready = [u for u in users if u.run_ids and u.socket is not None]
        await asyncio.gather(*(_probe(u, ready[(i + 1) % len(ready)])
                               for i, u in enumerate(ready) if len(ready) > 1))
        markers = [u.marker for u in users]
        stored = await asyncio.gather(*(u.client.run_events(r) for u in ready
                                        for r in u.run_ids))
        result.metrics["events_sent"] = sum(len(events) for events in stored)
        for user in ready:
            _check(user, markers)
            assert user.socket is not None
            for value in delivery_ms(user.socket.frames):
                result.sample("event_latency_ms", value)
            result.count("events_received", len(user.socket.events))
            result.count("tools_executed", sum(e["type"] == "tool_completed"
                                               for e in user.socket.events))
    finally:
        for user in users:
            if user.socket is not None:
                await user.socket.close()
            await user.client.aclose()
    for user in users:
        result.failures += user.problems + user.violations
    successes = sum(u.succeeded and not u.problems and not u.violations for u in users)
    result.metrics["users"] = count
    result.metrics["success_rate"] = successes / count
    sent = result.metrics.get("events_sent", 0)
    result.metrics["delivery_rate"] = result.metrics.get("events_received", 0) / sent if sent else 0
    result.metrics["isolation_violations"] = sum(len(u.violations) for u in users)
