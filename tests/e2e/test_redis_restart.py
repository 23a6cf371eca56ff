"""Redis restarts under running runs: with its data nothing is lost; empty, the epoch
changes, clients are told to resync, and runs still end with a terminal event."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from e2e.checks import check_all, check_run_invariants, check_schema, check_sequence
from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, unique_email
from e2e.stack import LocalStack, StackConfig
from tests.conftest import starts_servers


@pytest.fixture(scope="module")
@starts_servers
def redis_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(StackConfig.for_tests(tmp_path_factory.mktemp("redis-restart"))) as stack:
        yield stack


async def _bridge_states(stack: LocalStack, seen: list[tuple[float, str]],
                         stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        while not stop.is_set():
            body = (await http.get(f"{stack.backend_internal_url()}/readyz")).json()
            if not seen or seen[-1][1] != body["bridge"]:
                seen.append((time.monotonic(), body["bridge"]))
            await asyncio.sleep(0.05)


async def test_restart_with_data_loses_nothing(redis_stack: LocalStack) -> None:
    async with ChatClient(redis_stack.auth_url, redis_stack.backend_url()) as client:
        await client.signup(unique_email("restart"), PASSWORD)
        socket = await client.connect(redis_stack.ws_url())
        states: list[tuple[float, str]] = []
        stop = asyncio.Event()
        watcher = asyncio.create_task(_bridge_states(redis_stack, states, stop))
        try:
            thread = await client.create_thread()
            run = await client.start_run(thread["id"], "ticks 300 every 15ms", agent="ticker")
            await socket.wait_for(lambda f: f.get("seq", 0) >= 30)
            await asyncio.to_thread(redis_stack.stop_service, "redis")
            await asyncio.sleep(3.0)  # longer than the client's own quick retries
            await redis_stack.astart_service("redis")
            redis_back = time.monotonic()
            await socket.wait_terminal(run["id"], timeout=60)
            events = socket.run_events(run["id"])
            assert len(events) == 303
            assert check_all(events, {run["id"]}, client.user["id"], first=1) == []
            assert (await client.wait_run(run["id"]))["status"] == "succeeded"
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await watcher
            await socket.close()
    names = [state for _, state in states]
    assert "DEGRADED" in names and names[-1] == "ACTIVE", names
    active_again = next(at for at, state in states[names.index("DEGRADED"):]
                        if state == "ACTIVE")
    assert active_again - redis_back < 5.0


async def test_restart_empty_changes_the_epoch_and_runs_still_end(
        redis_stack: LocalStack) -> None:
    async with ChatClient(redis_stack.auth_url, redis_stack.backend_url()) as client:
        await client.signup(unique_email("wiped"), PASSWORD)
        socket = await client.connect(redis_stack.ws_url())
        try:
            thread = await client.create_thread()
            run = await client.start_run(thread["id"], "ticks 300 every 15ms", agent="ticker")
            await socket.wait_for(lambda f: f.get("seq", 0) >= 30)
            await asyncio.to_thread(redis_stack.stop_service, "redis")
            await redis_stack.astart_service("redis", wipe=True)
            resync = await socket.wait_for(lambda f: f.get("type") == "resync_required",
                                           timeout=30)
            assert resync["epoch"] != socket.welcome["epoch"]
            terminal = await socket.wait_terminal(run["id"], timeout=60)
            assert terminal["epoch"] == resync["epoch"]
            after = [e for e in socket.events if e["epoch"] == resync["epoch"]]
            assert check_sequence(after, first=resync["last_seq"] + 1) == []
            assert check_schema(after) == []
            assert check_run_invariants(socket.run_events(run["id"]), [run["id"]]) == []
            final = await client.wait_run(run["id"], timeout=30)
            assert final["status"] in {"succeeded", "failed"}
            # a fresh socket resumes with the old epoch: told to reload
            fresh = await client.connect(redis_stack.ws_url())
            answer = await fresh.request({"type": "resume", "after": 10,
                                          "epoch": socket.welcome["epoch"]})
            assert answer["type"] == "resync_required"
            await fresh.close()
        finally:
            await socket.close()
