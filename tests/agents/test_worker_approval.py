"""A run paused for a tool approval, across two workers on a real redis-server: the
first frees its slot, the second takes the answered run back and ends it; a worker
that lacks the run's agent ends it cleanly, with no second ``agent_started``."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from agents.builtin import builtin_agents
from agents.config import WorkerSettings
from agents.worker import QueueEntry, Worker
from bridge.approvals import Approvals
from bridge.queue import RunRequest
from e2e.checks import check_run_invariants
from servicekit.rediskeys import RUN_QUEUE
from tests.agents.test_worker import USER, _events

REQUEST = RunRequest(run_id="run_wa", user_id=USER, thread_id="thr_w", agent="supervisor",
                     input="what is 17 * 23")


def _worker(redis: Redis, name: str, *, agents: bool = True) -> Worker:
    settings = WorkerSettings(worker_id=name, approval_tools=["calculator"])
    return Worker(settings, redis, builtin_agents(settings) if agents else {})


async def _paused(redis: Redis) -> str:
    first = _worker(redis, "worker-a")
    first._start(QueueEntry(RUN_QUEUE, b"0-1"), REQUEST)
    await asyncio.wait_for(first._running["run_wa"][1], 10)
    assert first._running == {}  # the slot is free while the run waits
    events = await _events(redis, "run_wa")
    assert events[-1]["type"] == "approval_required"
    call_id: str = events[-1]["payload"]["call_id"]
    outcome = await Approvals(redis).answer(REQUEST, call_id, approve=True,
                                            now_ms=int(time.time() * 1000))
    assert outcome.value == "ok"
    return call_id


async def test_another_worker_takes_the_answered_run_back(redis: Redis) -> None:
    call_id = await _paused(redis)
    second = _worker(redis, "worker-b")
    second._start(QueueEntry(RUN_QUEUE, b"0-2"), RunRequest(**{**REQUEST.fields(), "resume": "1"}))
    await asyncio.wait_for(second._running["run_wa"][1], 10)
    events = await _events(redis, "run_wa")
    assert [e["type"] for e in events] == [
        "agent_started", "agent_thinking", "approval_required", "tool_executing",
        "tool_completed", "agent_completed"]
    assert events[3]["payload"]["call_id"] == call_id
    assert events[-1]["payload"]["result"] == "17 * 23 = 391"
    assert check_run_invariants(events, ["run_wa"]) == []


async def test_a_worker_without_the_agent_ends_the_resumed_run_once(redis: Redis) -> None:
    await _paused(redis)
    bare = _worker(redis, "worker-c", agents=False)
    bare._start(QueueEntry(RUN_QUEUE, b"0-3"), RunRequest(**{**REQUEST.fields(), "resume": "1"}))
    await asyncio.wait_for(bare._running["run_wa"][1], 10)
    events = await _events(redis, "run_wa")
    assert [e["type"] for e in events][-2:] == ["tool_completed", "agent_failed"]
    assert [e["type"] for e in events].count("agent_started") == 1
    assert events[-1]["payload"]["error"]["code"] == "unknown_agent"
    assert check_run_invariants(events, ["run_wa"]) == []
