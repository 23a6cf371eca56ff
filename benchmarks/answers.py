"""Answer relay benchmark: a model's streamed answer relayed by the runtime to Redis.

    .venv/bin/python -m benchmarks.answers [--pieces 300] [--others 0,50] [--paces 0,5]

One run's answer of ``--pieces`` pieces, from a model that sends them at once
(pace 0: a fast server, or a response the network delivered whole) or one every
``--paces`` ms, goes through the runtime onto a real Redis while ``--others``
other runs of the same worker emit without pause on the same emitter. It prints
how long the answer took, from the model's first piece to its run's end stored,
and the events it became; beside it, the baseline measured in the same run and
under the same load: the same stream read with nothing emitted (the model's own
pace on this event loop). The event loop is uvloop, as the worker's is.
Figures only, no pass or fail.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import uvloop
from redis.asyncio import Redis

from agents.context import RunContext
from agents.planner import Final, Transcript
from agents.runtime import Agent, Runtime
from agents.tools import ToolRegistry
from bridge.emitter import EventEmitter, RunEmitter
from e2e.stack import LocalStack, StackConfig


class _Answer:
    """A planner whose one step is the model's streamed answer."""

    def __init__(self, stream: AsyncIterator[str]) -> None:
        self._stream = stream

    async def next_step(self, transcript: Transcript) -> Final:
        return Final("", stream=self._stream)


async def _model(pieces: int, pace_ms: float) -> AsyncIterator[str]:
    for n in range(pieces):
        if pace_ms:
            await asyncio.sleep(pace_ms / 1000)
        yield f"piece{n} "


async def _other_run(emitter: EventEmitter, n: int, stop: asyncio.Event) -> None:
    run = RunEmitter(emitter, user_id=f"usr_other{n}", run_id=f"run_other{n}",
                     thread_id="thr_other", agent="other")
    await run.emit("agent_started", {"input": "load"})
    while not stop.is_set():
        await run.emit("partial_result", {"delta": "x" * 100})


async def _alone(pieces: int, pace_ms: float) -> float:
    """The baseline: seconds to read the stream with nothing emitted."""
    start = time.perf_counter()
    async for _ in _model(pieces, pace_ms):
        pass
    return time.perf_counter() - start


async def _relayed(emitter: EventEmitter, run_id: str, pieces: int, pace_ms: float
                   ) -> tuple[float, int]:
    """Seconds from the start to the answer's end stored, and the events the run stored."""
    start = time.perf_counter()
    run = RunEmitter(emitter, user_id="usr_answer", run_id=run_id, thread_id="thr_answer",
                     agent="answer")
    ctx = RunContext(run_id=run_id, user_id="usr_answer", thread_id="thr_answer",
                     agent="answer", input="go", emitter=run,
                     deadline=asyncio.get_running_loop().time() + 600)
    agent = Agent("answer", "a streamed answer", _Answer(_model(pieces, pace_ms)),
                  ToolRegistry([]))
    ending = await Runtime(max_steps=2, tool_timeout_s=5).run(ctx, agent)
    if ending != "agent_completed":
        raise RuntimeError(f"the answer's run ended {ending}")
    return time.perf_counter() - start, run.events_emitted


async def measure(redis_url: str, pieces: int, others: list[int], paces: list[float]
                  ) -> None:
    redis = Redis.from_url(redis_url)
    emitter = EventEmitter(redis)
    print(f"{'pace ms':>8} {'others':>7} {'baseline s':>11} {'answer s':>9} {'events':>7}")
    try:
        for pace in paces:
            for count in others:
                stop = asyncio.Event()
                load = [asyncio.create_task(_other_run(emitter, n, stop))
                        for n in range(count)]
                await asyncio.sleep(0.2)  # the load is going
                baseline = await _alone(pieces, pace)
                took, events = await _relayed(emitter, f"run_answer_{pace}_{count}", pieces,
                                              pace)
                stop.set()
                await asyncio.gather(*load)
                print(f"{pace:>8g} {count:>7} {baseline:>11.3f} {took:>9.3f} {events:>7}")
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pieces", type=int, default=300)
    parser.add_argument("--others", default="0,50", help="other runs emitting meanwhile")
    parser.add_argument("--paces", default="0,5", help="ms between the model's pieces")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        stack = LocalStack(StackConfig.for_tests(Path(root)))
        stack.start(only=("redis",))
        try:
            uvloop.run(measure(stack.redis_url, args.pieces,
                                [int(n) for n in args.others.split(",")],
                                [float(p) for p in args.paces.split(",")]))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
