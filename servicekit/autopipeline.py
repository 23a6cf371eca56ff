"""Automatic pipelining: commands of concurrent callers reach Redis together.

Each caller awaits its own command as if it ran alone. Commands issued while
another batch is on its way wait for it and then go out as one pipeline (one
write, one read, one pooled connection), so hundreds of runs emitting at once
cost a few round trips instead of hundreds, and the client's per-command
overhead (pool checkout, timeouts, task switches) is paid once per batch. An
idle caller is not delayed: a batch leaves as soon as the previous one is
answered, never waiting to fill up.

A command's error reaches its caller only; a lost connection fails every
command of its batch, as it would have failed each of them alone. The batching
itself is :class:`servicekit.batching.Batcher`'s (a cancelled caller's command
not yet sent is not sent).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from servicekit.batching import Batcher

__all__ = ["AutoPipeline"]


@dataclass(slots=True, eq=False)  # not frozen: one is made per command, on the event path
class _Command:
    add: Callable[[Pipeline], object]
    script: AsyncScript | None


class AutoPipeline:
    """Sends the commands of concurrent callers to Redis in shared pipelines.

    One batch is in flight at a time, of at most ``max_batch`` commands.
    """

    def __init__(self, redis: Redis, *, max_batch: int = 512) -> None:
        self._redis = redis
        self._batcher: Batcher[_Command, Any] = Batcher(
            self._send_batch, max_batch=max_batch, name="redis-autopipeline",
            shutdown_error=RedisError)

    @property
    def batches(self) -> int:
        """Pipelines sent (for tests and metrics)."""
        return self._batcher.batches

    async def execute(self, *args: Any) -> Any:
        """Run one command (``"GET", key``…); returns its parsed reply."""
        return await self._batcher.submit(_Command(lambda pipe: pipe.execute_command(*args),
                                                   None))

    async def script(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
                     ) -> Any:
        """Run a registered script by its digest, loading it first when Redis lacks it."""
        return await self._batcher.submit(_Command(
            lambda pipe: pipe.evalsha(script.sha, len(keys), *keys, *args), script))

    async def _send_batch(self, batch: list[_Command]) -> list[Any]:
        """Each command's reply or error; a lost connection raises (every caller)."""
        replies = await self._pipeline(batch)
        # not run: Redis lost its scripts (a restart); loaded, then sent once more
        missing = [n for n, (command, reply) in enumerate(zip(batch, replies, strict=True))
                   if isinstance(reply, NoScriptError) and command.script is not None]
        if missing:
            try:
                for script in {id(batch[n].script): batch[n].script for n in missing}.values():
                    assert script is not None
                    await self._redis.script_load(script.script)
                again = await self._pipeline([batch[n] for n in missing])
            except RedisError as exc:  # those commands fail; the others ran
                again = [exc] * len(missing)
            for n, reply in zip(missing, again, strict=True):
                replies[n] = reply
        return replies

    async def _pipeline(self, commands: list[_Command]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for command in commands:
            command.add(pipe)
        return list(await pipe.execute(raise_on_error=False))
