"""The worker's run tasks, against a real redis-server: a stop request at any
moment of a run's life ends it with its terminal event."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from agents.builtin import builtin_agents
from agents.config import WorkerSettings
from agents.context import StopReason
from agents.worker import QueueEntry, Worker
from bridge.cancel import request_cancel
from bridge.queue import RunRequest
from bridge.streams import UserStreams
from e2e.checks import check_run_invariants
from servicekit.rediskeys import RUN_QUEUE

USER = "usr_worker"


def _worker(redis: Redis) -> Worker:
    settings = WorkerSettings(worker_id="worker-test")
    return Worker(settings, redis, builtin_agents(settings))


async def _events(redis: Redis, run_id: str) -> list[dict[str, Any]]:
    page = await UserStreams(redis).read_after(USER, 0)
    return [e for e in (json.loads(raw) for _, raw in page.events) if e["run_id"] == run_id]


async def _run(worker: Worker, run_id: str) -> asyncio.Task[None]:
    # as if read from the queue
    worker._start(QueueEntry(RUN_QUEUE, b"0-1"),
                  RunRequest(run_id=run_id, user_id=USER, thread_id="thr_w",
                             agent="supervisor", input="what is 17 * 23"))
    return worker._running[run_id][1]


@pytest.mark.parametrize(("reason", "terminal"), [
    ("user", {"type": "agent_cancelled", "payload": {"by": "user"}}),
    ("interrupt", {"type": "agent_cancelled", "payload": {"by": "interrupt"}}),
    ("worker_lost", {"type": "agent_failed", "payload": {
        "error": {"code": "worker_lost", "message": "the worker stopped during the run"},
        "cause": "worker_lost"}}),
])
async def test_a_stop_before_the_run_begins_still_ends_it(
        redis: Redis, reason: StopReason, terminal: dict[str, Any]) -> None:
    worker = _worker(redis)
    run_id = f"run_before_{reason}"
    task = await _run(worker, run_id)
    assert worker.cancel(run_id, reason)  # before the task took its first step
    await asyncio.wait_for(task, 10)
    events = await _events(redis, run_id)
    assert [e["type"] for e in events] == ["agent_started", terminal["type"]]
    assert events[-1]["payload"] == terminal["payload"]
    assert check_run_invariants(events, [run_id]) == []


async def test_a_cancel_requested_before_the_worker_took_the_run(redis: Redis) -> None:
    worker = _worker(redis)
    await request_cancel(redis, "run_requested", by="user")
    await asyncio.wait_for(await _run(worker, "run_requested"), 10)
    assert [(e["type"], e["payload"].get("by")) for e in await _events(redis, "run_requested")
            ] == [("agent_started", None), ("agent_cancelled", "user")]


async def test_a_stop_during_any_step_ends_the_run_once(redis: Redis) -> None:
    """Cancelled after each of the task's first steps in turn: every run ends with
    exactly one terminal event, and the ones that completed first just complete."""
    worker = _worker(redis)
    endings = []
    for steps in range(12):
        run_id = f"run_step_{steps}"
        task = await _run(worker, run_id)
        for _ in range(steps):
            await asyncio.sleep(0)
        worker.cancel(run_id, "user")
        await asyncio.wait_for(task, 10)
        events = await _events(redis, run_id)
        assert check_run_invariants(events, [run_id]) == []
        endings.append(events[-1]["type"])
    assert set(endings) <= {"agent_cancelled", "agent_completed"}
    assert endings[0] == "agent_cancelled"


async def test_the_health_file_lives_while_the_worker_reaches_redis(
        redis: Redis, tmp_path: Path) -> None:
    """The container healthcheck's file: touched by the heartbeat, gone at exit."""
    health = tmp_path / "worker.alive"
    settings = WorkerSettings(worker_id="worker-health", health_file=str(health))
    worker = Worker(settings, redis, builtin_agents(settings))
    running = asyncio.create_task(worker.run())
    try:
        for _ in range(100):
            if health.exists():
                break
            await asyncio.sleep(0.05)
        assert health.exists()
    finally:
        worker.stop()
        await asyncio.wait_for(running, 15)
    assert not health.exists()
