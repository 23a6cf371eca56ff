"""What a client is told about a run is never contradicted by what it reads.

Runs of an agent that answers at once (``triage``: no tool, no wait) provoke the
races: on the socket that starts a run, ``run_accepted`` precedes the run's
events; the moment the socket has the run's ``agent_started``, ``GET`` on the run
says running or later; the moment it has the terminal event, ``GET`` says the
final status with the answer, and the thread's messages hold that answer. Fifty
runs in a row, each checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import pytest

from bridge.events import TERMINAL_TYPES
from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email

RUNS = 50


Frame = dict[str, Any]


def _answering(request_id: str) -> Callable[[Frame], bool]:
    return lambda frame: frame.get("request_id") == request_id


def _of_run(run_id: str, types: Collection[str]) -> Callable[[Frame], bool]:
    return lambda frame: frame.get("run_id") == run_id and frame.get("type") in types


@pytest.fixture
async def client(target: Target) -> AsyncIterator[ChatClient]:
    async with ChatClient(target.auth_url, target.backend_url) as user:
        await user.signup(unique_email("order"), PASSWORD)
        yield user


async def test_run_accepted_first_and_the_record_never_lags(client: ChatClient,
                                                            target: Target) -> None:
    socket = await client.connect(target.ws_url)
    try:
        for n in range(RUNS):
            thread = await client.create_thread()
            while True:  # within the socket's start_run rate
                mark = len(socket.frames)
                request_id = f"order-{n}-{mark}"
                await socket.send({"type": "start_run", "thread_id": thread["id"],
                                   "input": "hello", "agent": "triage",
                                   "request_id": request_id})
                accepted = await socket.wait_for(_answering(request_id), start=mark)
                if accepted.get("code") != "rate_limited":
                    break
                await asyncio.sleep(accepted["retry_after_ms"] / 1000)
            assert accepted["type"] == "run_accepted", accepted
            run_id = accepted["run_id"]
            started = await socket.wait_for(_of_run(run_id, {"agent_started"}), start=mark)
            assert (await client.run(run_id))["status"] != "queued", f"run {n}: record lags"
            terminal = await socket.wait_for(_of_run(run_id, TERMINAL_TYPES), start=mark)
            record = await client.run(run_id)
            assert record["status"] == "succeeded", f"run {n}: {record}"
            assert record["result"] == terminal["payload"]["result"]
            assert record["started_at"] <= record["finished_at"]
            messages = await client.messages(thread["id"])
            assert [(m["role"], m["content"]) for m in messages] == [
                ("user", "hello"), ("assistant", terminal["payload"]["result"])]
            frames = [f.frame for f in socket.frames[mark:]]
            first_event = next(i for i, f in enumerate(frames)
                               if f.get("run_id") == run_id and "seq" in f)
            assert frames.index(accepted) < first_event, f"run {n}: events before run_accepted"
            assert frames.index(started) == first_event
    finally:
        await socket.close()
