"""Two backends and two workers: delivery across replicas, and losing one of each."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import pytest

from e2e.checks import check_all
from e2e.client import ChatClient, EventSocket
from e2e.scenarios import PASSWORD, unique_email
from e2e.scenarios.base import lease_holder
from e2e.stack import LocalStack, StackConfig
from tests.conftest import starts_servers


@pytest.fixture(scope="module")
@starts_servers
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    config = StackConfig.for_tests(tmp_path_factory.mktemp("replicas"), backends=2, workers=2)
    with LocalStack(config) as stack:
        yield stack


async def _user(stack: LocalStack, replica: int = 1) -> ChatClient:
    client = ChatClient(stack.auth_url, stack.backend_url(replica))
    await client.signup(unique_email("replica"), PASSWORD)
    return client


async def test_a_socket_on_each_replica_gets_every_event(replicas: LocalStack) -> None:
    client = await _user(replicas)
    sockets = [await client.connect(replicas.ws_url(n)) for n in (1, 2)]
    try:
        thread = await client.create_thread()
        run = await client.start_run(thread["id"], "ticks 50 every 2ms", agent="ticker")
        for socket in sockets:
            await socket.wait_terminal(run["id"])
        for socket in sockets:
            events = socket.run_events(run["id"])
            assert len(events) == 53
            assert check_all(events, {run["id"]}, client.user["id"], first=1) == []
        assert sockets[0].events == sockets[1].events
    finally:
        for socket in sockets:
            await socket.close()
        await client.aclose()


async def test_concurrent_start_run_on_one_thread_accepts_exactly_one(
        replicas: LocalStack) -> None:
    client = await _user(replicas)
    try:
        thread = await client.create_thread()
        other = ChatClient(replicas.auth_url, replicas.backend_url(2))
        other.access_token = client.access_token
        # the accepted run outlasts every attempt, however slow the machine (a run
        # that already ended no longer makes the thread busy); it is cancelled after
        attempts = [c.start_run(thread["id"], "ticks 3000 every 10ms", agent="ticker")
                    for c in (client, other) for _ in range(5)]
        results = await asyncio.gather(*attempts, return_exceptions=True)
        accepted = [r for r in results if isinstance(r, dict)]
        refused = [r for r in results if not isinstance(r, dict)]
        assert len(accepted) == 1
        assert all(getattr(r, "code", None) == "thread_busy" for r in refused)
        await client.cancel_run(accepted[0]["id"])
        await client.wait_run(accepted[0]["id"])
        await other.aclose()
    finally:
        await client.aclose()


async def test_a_killed_worker_ends_its_run_as_worker_lost(replicas: LocalStack) -> None:
    client = await _user(replicas)
    socket = await client.connect(replicas.ws_url(1))
    try:
        thread = await client.create_thread()
        run = await client.start_run(thread["id"], "ticks 200 every 100ms", agent="ticker")
        worker = await lease_holder(replicas.redis_url, run["id"])
        await socket.wait_for(lambda f: f.get("type") == "partial_result")
        replicas.kill(worker)
        killed = time.monotonic()
        terminal = await socket.wait_terminal(run["id"], timeout=20)
        assert terminal["type"] == "agent_failed"
        assert terminal["payload"]["cause"] == "worker_lost"
        assert time.monotonic() - killed < 15
        assert check_all(socket.run_events(run["id"]), {run["id"]}, client.user["id"]) == []
        assert (await client.wait_run(run["id"]))["status"] == "failed"
        # the other worker keeps serving
        thread = await client.create_thread()
        answer = await socket.request({"type": "start_run", "thread_id": thread["id"],
                                       "input": "what is 2 * 21"})
        done = await socket.wait_terminal(answer["run_id"])
        assert done["payload"]["result"] == "2 * 21 = 42"
    finally:
        await socket.close()
        await client.aclose()
        if not replicas.service(worker).process.running():
            await replicas.astart_service(worker)


async def test_killing_a_backend_moves_its_clients_without_loss(replicas: LocalStack) -> None:
    client = await _user(replicas)
    socket = await client.connect(replicas.ws_url(2))
    survivor: EventSocket | None = None
    try:
        thread = await client.create_thread()
        answer = await socket.request({"type": "start_run", "thread_id": thread["id"],
                                       "input": "ticks 500 every 4ms", "agent": "ticker"})
        run_id = answer["run_id"]
        await socket.wait_for(lambda f: f.get("seq", 0) >= 50)
        replicas.kill("backend-2")
        with pytest.raises(ConnectionError):
            await socket.wait_terminal(run_id, timeout=10)
        seen = socket.events
        survivor = await client.connect(replicas.ws_url(1))
        await survivor.request({"type": "resume", "after": seen[-1]["seq"],
                                "epoch": socket.welcome["epoch"]})
        await survivor.wait_terminal(run_id, timeout=30)
        events = seen + survivor.events
        assert len(events) == 503
        assert check_all(events, {run_id}, client.user["id"], first=1) == []
    finally:
        await socket.close()
        if survivor is not None:
            await survivor.close()
        await client.aclose()
        await replicas.astart_service("backend-2")


async def test_a_stopping_backend_closes_sockets_with_1001(replicas: LocalStack) -> None:
    client = await _user(replicas)
    socket = await client.connect(replicas.ws_url(2))
    try:
        await asyncio.to_thread(replicas.stop_service, "backend-2")
        assert await socket.wait_closed(timeout=15) == 1001
    finally:
        await socket.close()
        await client.aclose()
        await replicas.astart_service("backend-2")


async def test_enqueue_and_interrupt_across_replicas_and_workers(replicas: LocalStack) -> None:
    first = await _user(replicas, 1)
    second = ChatClient(replicas.auth_url, replicas.backend_url(2))
    second.access_token = first.access_token
    try:
        thread = await first.create_thread()
        # long enough to be still running when the interrupt comes, on a slow machine too
        active = await first.start_run(thread["id"], "ticks 3000 every 20ms", agent="ticker")
        queued = [await c.start_run(thread["id"], f"what is {n} * 2", multitask="enqueue")
                  for n, c in ((1, second), (2, first))]
        interrupting = await second.start_run(thread["id"], "what is 9 * 9",
                                              multitask="interrupt")
        finals = [await first.wait_run(r["id"], timeout=40)
                  for r in (active, *queued, interrupting)]
        assert [f["status"] for f in finals] == ["cancelled", "cancelled", "cancelled",
                                                 "succeeded"]
        assert finals[-1]["result"] == "9 * 9 = 81"
        for earlier, later in itertools.pairwise(finals):
            assert later["started_at"] >= earlier["finished_at"]
    finally:
        await second.aclose()
        await first.aclose()
