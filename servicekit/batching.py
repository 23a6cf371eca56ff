"""Group commit: the requests of concurrent callers go to a database together.

Each caller awaits its own answer as if it had asked alone. Requests made while a
batch is on its way wait for it, then leave together as the next one (one round
trip, one transaction), so a burst of hundreds of callers costs a few statements
instead of hundreds, and the database's fixed cost per statement and per commit
is paid once per batch. An idle caller is not delayed: a batch leaves as soon as
the previous one is answered, never waiting to fill up.

What a batch does is the owner's function, given the requests in their order and
returning one answer each; an answer that is an exception is raised to its caller
alone. When the function itself fails, every caller of that batch gets its
error. A caller cancelled before its batch left takes its request out of it;
once sent, a request runs, its answer dropped. Nothing is kept once a batch is
answered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")


class _Pending(Generic[T, R]):
    """A request and its caller's future (compared by identity)."""

    __slots__ = ("future", "request")

    def __init__(self, request: T, future: asyncio.Future[R]) -> None:
        self.request = request
        self.future = future


class Batcher(Generic[T, R]):
    """Runs ``run_batch`` on the requests of concurrent callers; one batch (of at
    most ``max_batch``) in flight at a time. Callers whose batch is cut short by a
    shutdown get ``shutdown_error`` (the owner's usual error type)."""

    def __init__(self, run_batch: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
                 *, max_batch: int = 64, name: str = "batcher",
                 shutdown_error: type[Exception] = RuntimeError) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._name = name
        self._shutdown_error = shutdown_error
        self._pending: list[_Pending[T, R]] = []
        self._sender: asyncio.Task[None] | None = None
        self.batches = 0  # batches run (for tests and metrics)

    async def submit(self, request: T) -> R:
        """The request's answer, from the batch it joins."""
        entry = _Pending(request, asyncio.get_running_loop().create_future())
        self._pending.append(entry)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send(), name=self._name)
        try:
            return await entry.future
        except asyncio.CancelledError:
            if entry in self._pending:  # not yet sent: it leaves the queue
                self._pending.remove(entry)
            raise

    async def _send(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
                await self._answer(batch)
        finally:
            self._sender = None
            for entry in self._pending:  # only when the sender itself was cancelled
                _settle(entry.future,
                        self._shutdown_error(f"{self._name}: not sent, shutting down"))
            self._pending.clear()

    async def _answer(self, batch: list[_Pending[T, R]]) -> None:
        self.batches += 1
        try:
            answers = await self._run_batch([entry.request for entry in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"{self._name}: {len(answers)} answers for "
                                   f"{len(batch)} requests")
        except asyncio.CancelledError:
            for entry in batch:
                _settle(entry.future,
                        self._shutdown_error(f"{self._name}: answer lost, shutting down"))
            raise
        except Exception as exc:
            for entry in batch:
                _settle(entry.future, exc)
            return
        for entry, answer in zip(batch, answers, strict=True):
            _settle(entry.future, answer)


def _settle(future: asyncio.Future[R], answer: R | BaseException) -> None:
    """Answers a caller still waiting (one that was cancelled meanwhile is not)."""
    with contextlib.suppress(asyncio.InvalidStateError):
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)
