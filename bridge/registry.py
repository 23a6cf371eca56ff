"""ThreadRunRegistry: which of a thread's active runs are still live.

The runs table (in the backend's Postgres) is authoritative for a thread's runs
and their status, and "one active run per thread" is decided there, under the
thread row's lock, so it holds across replicas and survives a Redis restart. What
the table learns only later, Redis answers: whether a run's terminal event is out
(the emit script's ``done`` mark in the run's hash). A run whose record still says
active but whose terminal event is out is over: its thread is free.
"""

from __future__ import annotations

from redis.asyncio import Redis

from servicekit.rediskeys import UserKeys

__all__ = ["ThreadRunRegistry"]


class ThreadRunRegistry:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def ended(self, user_id: str, run_ids: list[str]) -> set[str]:
        """Those of the user's ``run_ids`` whose terminal event is stored (their
        records may still lag behind), in one round trip."""
        if not run_ids:
            return set()
        keys = UserKeys(user_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hget(keys.run(run_id), "done")
            done = await pipe.execute()
        return {run_id for run_id, mark in zip(run_ids, done, strict=True) if mark}
