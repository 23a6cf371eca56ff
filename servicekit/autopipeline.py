"""Automatic pipelining: commands of concurrent callers reach Redis together.

Each caller awaits its own command as if it ran alone. Commands issued while
another batch is on its way wait for it and then go out as one pipeline (one
write, one read, one pooled connection), so hundreds of runs emitting at once
cost a few round trips instead of hundreds, and the client's per-command
overhead (pool checkout, timeouts, task switches) is paid once per batch. An
idle caller is not delayed: a batch leaves as soon as the previous one is
answered, never waiting to fill up.

A command's error reaches its caller only; a lost connection fails every
command of its batch, as it would have failed each of them alone. Nothing is
kept once a batch is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

__all__ = ["AutoPipeline"]


class _Command:
    __slots__ = ("add", "future", "script")

    def __init__(self, add: Callable[[Pipeline], object], future: asyncio.Future[Any],
                 script: AsyncScript | None) -> None:
        self.add = add
        self.future = future
        self.script = script


class AutoPipeline:
    """Sends the commands of concurrent callers to Redis in shared pipelines.

    One batch is in flight at a time, of at most ``max_batch`` commands.
    """

    def __init__(self, redis: Redis, *, max_batch: int = 512) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._pending: list[_Command] = []
        self._sender: asyncio.Task[None] | None = None
        self.batches = 0  # pipelines sent (for tests and metrics)

    async def execute(self, *args: Any) -> Any:
        """Run one command (``"GET", key``…); returns its parsed reply."""
        return await self._submit(lambda pipe: pipe.execute_command(*args), None)

    async def script(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
                     ) -> Any:
        """Run a registered script by its digest, loading it first when Redis lacks it."""
        return await self._submit(
            lambda pipe: pipe.evalsha(script.sha, len(keys), *keys, *args), script)

    async def _submit(self, add: Callable[[Pipeline], object], script: AsyncScript | None
                      ) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Command(add, future, script))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send(), name="redis-autopipeline")
        return await future

    async def _send(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
                await self._send_batch(batch)
        finally:
            self._sender = None
            for command in self._pending:  # only when the sender itself was cancelled
                _fail(command.future, RedisError("the command was not sent: shutting down"))
            self._pending.clear()

    async def _send_batch(self, batch: list[_Command]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for command in batch:
            command.add(pipe)
        self.batches += 1
        try:
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for command in batch:
                _fail(command.future, RedisError("the command's answer was lost: shutting down"))
            raise
        except Exception as exc:
            for command in batch:
                _fail(command.future, exc)
            return
        missing: list[_Command] = []
        for command, reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError) and command.script is not None:
                missing.append(command)  # not run: Redis lost its scripts (restart)
            elif isinstance(reply, Exception):
                _fail(command.future, reply)
            elif not command.future.done():
                command.future.set_result(reply)
        if missing:
            try:
                for script in {id(c.script): c.script for c in missing}.values():
                    assert script is not None
                    await self._redis.script_load(script.script)
            except RedisError as exc:
                for command in missing:
                    _fail(command.future, exc)
                return
            self._pending[:0] = missing


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    with contextlib.suppress(asyncio.InvalidStateError):
        future.set_exception(exc)
