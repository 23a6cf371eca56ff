"""The backend's side of tool approvals: the user's answer, a stop, the deadline.

A run paused on a call (``approval_required``) waits in Redis
(:mod:`bridge.approvals`). Its user approves or rejects it (REST or socket): the
first answer wins and puts the run back on the queue for any worker. A cancel or
an interrupt of a waiting run, or its deadline passing (seen by the reaper), ends
it here with ``agent_cancelled``: no worker holds it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import asyncpg

from bridge.approvals import Answered, Approvals, Waiting
from bridge.emitter import EventEmitter
from bridge.errors import RunFinished
from bridge.events import StoppedBy, cancelled
from bridge.queue import RunRequest
from servicekit import ProblemError

__all__ = ["RunApprovals"]

log = logging.getLogger(__name__)

_PROBLEMS = {
    Answered.NOT_WAITING: (409, "approval_not_pending", "no call {call} of this run waits "
                                                        "for an answer"),
    Answered.ANSWERED: (409, "approval_not_pending", "the call {call} was answered already"),
    Answered.EXPIRED: (409, "approval_expired", "the call {call} waited past its deadline; "
                                                "the run is being cancelled"),
    Answered.ENDED: (409, "run_finished", "the run already ended"),
}


class RunApprovals:
    """One per process; holds no run's state."""

    def __init__(self, pool: asyncpg.Pool, approvals: Approvals, emitter: EventEmitter, *,
                 counted: Callable[[str], None] = lambda outcome: None) -> None:
        self._counted = counted  # a metric: approved, rejected, timeout, stopped
        self._pool = pool
        self._approvals = approvals
        self._emitter = emitter

    async def answer(self, user_id: str, run_id: str, call_id: str, *, approve: bool) -> None:
        """The user's answer to the call; raises a problem when it cannot be taken."""
        row = await self._pool.fetchrow(
            "SELECT id, user_id, thread_id, agent, input, status FROM app.runs "
            "WHERE id = $1 AND user_id = $2", run_id, user_id)
        if row is None:
            raise ProblemError(404, "not_found", "no such run")
        if row["status"] not in ("queued", "running"):
            raise ProblemError(409, "run_finished", f"the run already ended ({row['status']})")
        request = RunRequest(run_id=row["id"], user_id=row["user_id"],
                             thread_id=row["thread_id"], agent=row["agent"], input=row["input"])
        outcome = await self._approvals.answer(request, call_id, approve=approve,
                                               now_ms=_now_ms())
        if outcome is not Answered.OK:
            status, code, detail = _PROBLEMS[outcome]
            raise ProblemError(status, code, detail.format(call=call_id))
        outcome_name = "approved" if approve else "rejected"
        self._counted(outcome_name)
        log.info("run %s: call %s %s", run_id, call_id, outcome_name)

    async def stop(self, user_id: str, run_id: str, by: StoppedBy, *,
                   thread_id: str | None = None, agent: str | None = None) -> bool:
        """End the run with ``agent_cancelled`` if it waits for an answer; whether it
        did (a run on a worker is stopped there: ``bridge.cancel``). ``thread_id``
        and ``agent``: the run's, when its record is gone (its thread deleted)."""
        if await self._approvals.stop(user_id, run_id, by, now_ms=_now_ms()) is not Answered.OK:
            return False
        if thread_id is None or agent is None:
            row = await self._pool.fetchrow(
                "SELECT thread_id, agent FROM app.runs WHERE id = $1", run_id)
            if row is None:
                log.warning("run %s waited for an approval and has no record; not told",
                            run_id)
                return True
            thread_id, agent = row["thread_id"], row["agent"]
        await self._cancel(user_id, run_id, thread_id, agent, by)
        return True

    async def sweep(self, unleased: Sequence[asyncpg.Record]) -> set[str]:
        """Of running runs without a worker, those that wait for an answer (never lost);
        each past its deadline is cancelled (``approval_timeout``), and each whose stop
        was claimed but not yet told is told now. Returns the waiting runs' ids."""
        waiting = await self._approvals.waiting([(r["user_id"], r["id"]) for r in unleased])
        now = _now_ms()
        for run in unleased:
            wait: Waiting | None = waiting.get(run["id"])
            if wait is None:
                continue
            by = wait.stopped_by
            if by is None and wait.answer is None and wait.expires_ms <= now:
                outcome = await self._approvals.stop(run["user_id"], run["id"],
                                                     "approval_timeout", now_ms=now)
                by = "approval_timeout" if outcome is Answered.OK else None
            if by is not None:
                await self._cancel(run["user_id"], run["id"], run["thread_id"], run["agent"], by)
        return set(waiting)

    async def _cancel(self, user_id: str, run_id: str, thread_id: str, agent: str,
                      by: StoppedBy) -> None:
        try:
            await self._emitter.emit(user_id=user_id, run_id=run_id, thread_id=thread_id,
                                     agent=agent, type="agent_cancelled", payload=cancelled(by))
        except RunFinished:
            return
        self._counted("timeout" if by == "approval_timeout" else "stopped")
        log.info("run %s waited for an approval; cancelled (%s)", run_id, by)


def _now_ms() -> int:
    return int(time.time() * 1000)
