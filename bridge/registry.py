"""ThreadRunRegistry: which runs have ended, which are alive, which were lost.

The runs table (in the backend's Postgres) is authoritative for who owns a run
and its status. Redis answers what the table learns only later:

- whether a run's terminal event is out (the emit script's ``done`` mark), so a
  thread is free before the lifecycle update lands;
- ``run:lease:<run>``: held by the worker executing the run, renewed while it
  runs. A running run without a lease lost its worker: it is declared lost
  (``agent_failed``, cause ``worker_lost``) by :meth:`reap`.

"One active run per thread" is decided where the run is created, under the
thread row's lock in Postgres, so it holds across replicas and survives a Redis
restart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from bridge.emitter import EventEmitter
from bridge.errors import RunFinished
from bridge.keys import UserKeys

__all__ = ["RunRecord", "ThreadRunRegistry", "lease_key"]

log = logging.getLogger(__name__)


def lease_key(run_id: str) -> str:
    return f"run:lease:{run_id}"


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    thread_id: str
    user_id: str
    agent: str
    status: str


class ThreadRunRegistry:
    def __init__(self, redis: Redis, *, lease_ttl_s: float = 10.0) -> None:
        self._redis = redis
        self.lease_ttl_s = lease_ttl_s
        self._unleased_since: dict[str, float] = {}

    async def ended(self, user_id: str, run_id: str) -> bool:
        """Whether the run's terminal event is stored (its record may still lag behind)."""
        return bool(await self._redis.hget(UserKeys(user_id).run(run_id), "done"))

    # -- leases (worker side) --------------------------------------------------------------
    def hold_command(self, run_id: str, worker_id: str) -> tuple[str, ...]:
        """The command that takes or renews a run's lease, for a caller that sends it
        along with others."""
        return ("SET", lease_key(run_id), worker_id, "PX", str(int(self.lease_ttl_s * 1000)))

    @staticmethod
    def release_command(run_id: str) -> tuple[str, ...]:
        return ("DEL", lease_key(run_id))

    async def hold(self, run_ids: Iterable[str], worker_id: str) -> None:
        """Take or renew the leases of the runs this worker executes."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.execute_command(*self.hold_command(run_id, worker_id))
            await pipe.execute()

    # -- lost runs (backend side) ----------------------------------------------------------
    async def unleased(self, runs: list[RunRecord]) -> list[RunRecord]:
        if not runs:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for run in runs:
                pipe.exists(lease_key(run.run_id))
            held = await pipe.execute()
        return [run for run, alive in zip(runs, held, strict=True) if not alive]

    async def reap(self, running: list[RunRecord], emitter: EventEmitter, *,
                   now: float, grace_s: float = 4.0) -> list[str]:
        """End every running run whose worker is gone; returns their ids.

        A run counts as lost once it has been seen without a lease for ``grace_s``
        (so a Redis that came back empty, losing the leases, gives the workers a
        heartbeat to take them again). Safe to run on every replica at once: the
        emit script stores one terminal event per run, so a run is declared lost
        once, and never after it ended.
        """
        unleased = await self.unleased(running)
        seen = {run.run_id for run in unleased}
        self._unleased_since = {run_id: since for run_id, since in self._unleased_since.items()
                                if run_id in seen}
        lost = []
        for run in unleased:
            if now - self._unleased_since.setdefault(run.run_id, now) < grace_s:
                continue
            try:
                await emitter.emit(
                    user_id=run.user_id, run_id=run.run_id, thread_id=run.thread_id,
                    agent=run.agent, type="agent_failed",
                    payload={"error": {"code": "worker_lost",
                                       "message": "the worker executing the run stopped"},
                             "cause": "worker_lost"})
            except RunFinished:
                continue
            log.warning("run %s lost its worker; ended as worker_lost", run.run_id)
            lost.append(run.run_id)
        return lost
