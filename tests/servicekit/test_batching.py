"""Group commit (servicekit.batching): pure asyncio, the batch function a recorder."""

import asyncio

import pytest

from servicekit.batching import Batcher


class Recorder:
    """A batch function: doubles each number, fails on negatives, records batches."""

    def __init__(self, *, delay: float = 0.01) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, batch: list[int]) -> list[int | BaseException]:
        self.batches.append(batch)
        await self.release.wait()
        await asyncio.sleep(self.delay)
        return [ValueError(f"negative: {n}") if n < 0 else n * 2 for n in batch]


async def test_an_idle_caller_goes_alone_and_at_once() -> None:
    recorder = Recorder(delay=0)
    batcher = Batcher(recorder)
    assert await batcher.submit(21) == 42
    assert recorder.batches == [[21]]


async def test_concurrent_callers_share_batches_and_get_their_own_answers() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch=16)
    answers = await asyncio.gather(*(batcher.submit(n) for n in range(100)))
    assert answers == [n * 2 for n in range(100)]
    assert 1 < len(recorder.batches) < 100 and batcher.batches == len(recorder.batches)
    assert max(len(b) for b in recorder.batches) == 16
    assert sorted(n for b in recorder.batches for n in b) == list(range(100))


async def test_an_answer_that_is_an_error_reaches_its_caller_only() -> None:
    batcher = Batcher(Recorder())
    results = await asyncio.gather(batcher.submit(1), batcher.submit(-1), batcher.submit(2),
                                   return_exceptions=True)
    assert results[0] == 2 and results[2] == 4
    assert isinstance(results[1], ValueError) and "negative: -1" in str(results[1])


async def test_a_failing_batch_fails_its_callers_and_the_next_batch_runs() -> None:
    calls = 0

    async def flaky(batch: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database away")
        return batch

    batcher = Batcher(flaky)
    results = await asyncio.gather(*(batcher.submit(n) for n in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await batcher.submit(7) == 7


async def test_a_wrong_number_of_answers_is_an_error_for_every_caller() -> None:
    async def short(batch: list[int]) -> list[int]:
        return batch[:-1]

    batcher = Batcher(short, name="short")
    results = await asyncio.gather(batcher.submit(1), batcher.submit(2),
                                   return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "1 answers for 2" in str(r) for r in results)


async def test_a_caller_cancelled_before_its_batch_left_is_not_sent() -> None:
    recorder = Recorder()
    recorder.release.clear()  # the first batch waits
    batcher = Batcher(recorder)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.01)  # on its way
    waiting = [asyncio.create_task(batcher.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    waiting[1].cancel()
    recorder.release.set()
    assert await first == 2
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert results[0] == 4 and results[2] == 8
    assert isinstance(results[1], asyncio.CancelledError)
    assert recorder.batches == [[1], [2, 4]]


async def test_a_cancelled_caller_whose_batch_left_is_answered_to_nobody() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder)
    callers = [asyncio.create_task(batcher.submit(n)) for n in range(3)]
    await asyncio.sleep(0.001)  # the batch is on its way
    callers[1].cancel()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert results[0] == 0 and results[2] == 4
    assert isinstance(results[1], asyncio.CancelledError)
    assert recorder.batches == [[0, 1, 2]]  # it ran all the same


async def test_callers_of_a_batch_cut_short_get_the_owners_error() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = Batcher(recorder, shutdown_error=ConnectionError)
    callers = [asyncio.create_task(batcher.submit(n)) for n in range(2)]
    await asyncio.sleep(0.01)
    sender = batcher._sender
    assert sender is not None
    sender.cancel()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) and "shutting down" in str(r) for r in results)


def test_a_batch_holds_at_least_one_request() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Batcher(Recorder(), max_batch=0)
