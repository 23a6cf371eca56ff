"""Run leases: a worker holds one per run it executes, renewed while it runs.

A lease (:func:`servicekit.rediskeys.lease_key`) carries the worker's id and
expires after ``lease_ttl_s`` unless renewed. The backend's reaper reads them: a
running run without a lease lost its worker.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

from servicekit.rediskeys import lease_key

__all__ = ["RunLeases"]


class RunLeases:
    def __init__(self, redis: Redis, *, lease_ttl_s: float = 10.0) -> None:
        self._redis = redis
        self.lease_ttl_s = lease_ttl_s

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

    async def unleased(self, run_ids: list[str]) -> set[str]:
        """Those of ``run_ids`` that no worker holds."""
        if not run_ids:
            return set()
        async with self._redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.exists(lease_key(run_id))
            held = await pipe.execute()
        return {run_id for run_id, alive in zip(run_ids, held, strict=True) if not alive}
