"""Tool approvals in Redis (a real redis-server): the first answer wins, an approval
puts one resume entry on the queue, a stop none, and the paused state is taken once."""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from bridge.approvals import Answered, Approvals
from bridge.queue import RunRequest
from servicekit.rediskeys import RUN_QUEUE, UserKeys

REQUEST = RunRequest(run_id="run_a", user_id="usr_a", thread_id="thr_a", agent="supervisor",
                     input="what is 6 * 7")


def _now() -> int:
    return int(time.time() * 1000)


async def _park(approvals: Approvals, *, call: str = "tcl_1", in_s: float = 60) -> None:
    await approvals.park("usr_a", "run_a", call_id=call, expires_ms=_now() + int(in_s * 1000),
                         state='{"paused": true}', asked={"call_id": call, "tool": "calculator"})


async def test_an_approval_resumes_once_and_only_the_first_answer_counts(redis: Redis) -> None:
    approvals = Approvals(redis)
    await redis.hset(UserKeys("usr_a").run("run_a"), "n", 4)
    await _park(approvals)
    waiting = await approvals.waiting([("usr_a", "run_a"), ("usr_a", "run_other")])
    assert list(waiting) == ["run_a"] and waiting["run_a"].call_id == "tcl_1"
    assert waiting["run_a"].answer is None and waiting["run_a"].stopped_by is None
    assert await approvals.pending("usr_a", "run_a") == {"call_id": "tcl_1",
                                                         "tool": "calculator"}

    assert await approvals.answer(REQUEST, "tcl_2", approve=True, now_ms=_now()) \
        is Answered.NOT_WAITING
    assert await approvals.answer(REQUEST, "tcl_1", approve=True, now_ms=_now()) is Answered.OK
    assert await approvals.pending("usr_a", "run_a") is None  # answered: waits no more
    assert await approvals.answer(REQUEST, "tcl_1", approve=False, now_ms=_now()) \
        is Answered.ANSWERED
    assert await approvals.stop("usr_a", "run_a", "user", now_ms=_now()) is Answered.ANSWERED

    entries: Any = await redis.xrange(RUN_QUEUE)
    assert len(entries) == 1
    assert RunRequest.from_fields(entries[0][1]) == RunRequest(**{**REQUEST.fields(),
                                                                  "resume": "1"})
    assert await redis.hget(UserKeys("usr_a").run("run_a"), "q") == entries[0][0]

    taken = await approvals.take("usr_a", "run_a")
    assert taken is not None
    assert (taken.state, taken.approved, taken.events) == ('{"paused": true}', True, 4)
    assert await approvals.take("usr_a", "run_a") is None
    assert await approvals.waiting([("usr_a", "run_a")]) == {}


async def test_a_rejection_resumes_the_run_too(redis: Redis) -> None:
    approvals = Approvals(redis)
    await _park(approvals)
    assert await approvals.answer(REQUEST, "tcl_1", approve=False, now_ms=_now()) is Answered.OK
    taken = await approvals.take("usr_a", "run_a")
    assert taken is not None and taken.approved is False
    assert await redis.xlen(RUN_QUEUE) == 1


async def test_past_its_deadline_an_answer_is_refused_and_the_stop_claimed(
        redis: Redis) -> None:
    approvals = Approvals(redis)
    await _park(approvals, in_s=-1)
    assert await approvals.answer(REQUEST, "tcl_1", approve=True, now_ms=_now()) \
        is Answered.EXPIRED
    assert await approvals.stop("usr_a", "run_a", "approval_timeout", now_ms=_now()) \
        is Answered.OK
    waiting = await approvals.waiting([("usr_a", "run_a")])
    assert waiting["run_a"].stopped_by == "approval_timeout"
    assert await approvals.take("usr_a", "run_a") is None  # a stop resumes nothing
    assert await redis.xlen(RUN_QUEUE) == 0


async def test_a_stop_beats_a_later_approval_and_an_ended_run_takes_no_answer(
        redis: Redis) -> None:
    approvals = Approvals(redis)
    await _park(approvals)
    assert await approvals.stop("usr_a", "run_a", "user", now_ms=_now()) is Answered.OK
    assert await approvals.answer(REQUEST, "tcl_1", approve=True, now_ms=_now()) \
        is Answered.ANSWERED
    await redis.hset(UserKeys("usr_a").run("run_a"), "done", "1")
    assert await approvals.answer(REQUEST, "tcl_1", approve=True, now_ms=_now()) \
        is Answered.ENDED
    assert await redis.xlen(RUN_QUEUE) == 0


async def test_a_new_pause_forgets_the_previous_answer(redis: Redis) -> None:
    approvals = Approvals(redis)
    await _park(approvals, call="tcl_1")
    assert await approvals.answer(REQUEST, "tcl_1", approve=True, now_ms=_now()) is Answered.OK
    assert await approvals.take("usr_a", "run_a") is not None
    await _park(approvals, call="tcl_2")  # the run's next call that needs approval
    assert await approvals.answer(REQUEST, "tcl_1", approve=True, now_ms=_now()) \
        is Answered.NOT_WAITING
    assert await approvals.answer(REQUEST, "tcl_2", approve=True, now_ms=_now()) is Answered.OK
