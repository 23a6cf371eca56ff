"""Fair share on a real stack with one worker of 8 slots (or two): a user with 200 queued runs
does not keep another user's run waiting; with fair share off (no dispatch window
in the backend, first come first served in the worker), it does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, unique_email
from e2e.stack import LocalStack, StackConfig
from tests.conftest import starts_servers

HEAVY_RUNS = 200
LONG_RUN = "ticks 4 every 50ms"  # about 200 ms: 200 of them keep 8 slots busy for seconds
START_WITHIN_S = 0.5


@pytest.fixture(scope="module", params=[(True, 1), (True, 2), (False, 1)],
                ids=["fair-share", "fair-share-two-workers", "first-come"])
@starts_servers
def one_worker(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, bool]]:
    fair, workers = request.param
    config = StackConfig.for_tests(tmp_path_factory.mktemp("fair"), workers=workers, env={
        "WORKER_CONCURRENCY": "8", "WORKER_FAIR_SHARE": "true" if fair else "false",
        "BACKEND_DISPATCH_WINDOW_PER_USER": "4" if fair else "1000",
        "BACKEND_MAX_ACTIVE_RUNS_PER_USER": "1000", "WORKER_SHUTDOWN_GRACE_S": "0"})
    with LocalStack(config) as stack:
        yield stack, fair


async def _user(stack: LocalStack, name: str) -> ChatClient:
    client = ChatClient(stack.auth_url, stack.backend_url(1))
    await client.signup(unique_email(name), PASSWORD)
    return client


async def _fill_the_queue(client: ChatClient) -> None:
    """HEAVY_RUNS runs, each on its own thread (a busy thread refuses a second run)."""
    gate = asyncio.Semaphore(16)

    async def one() -> None:
        async with gate:
            thread = await client.create_thread()
            await client.start_run(thread["id"], LONG_RUN, agent="ticker")

    await asyncio.gather(*(one() for _ in range(HEAVY_RUNS)))


async def test_a_light_users_run_starts_while_a_heavy_user_fills_the_queue(
        one_worker: tuple[LocalStack, bool]) -> None:
    stack, fair = one_worker
    heavy, light = await _user(stack, "heavy"), await _user(stack, "light")
    socket = await light.connect(stack.ws_url(1))
    try:
        await _fill_the_queue(heavy)
        thread = await light.create_thread()
        sent = time.monotonic()
        run = await light.start_run(thread["id"], "ticks 1", agent="ticker")
        try:
            await socket.wait_for(lambda f: f.get("run_id") == run["id"]
                                  and f.get("type") == "agent_started",
                                  timeout=max(0.0, sent + START_WITHIN_S - time.monotonic()))
            started = True
        except TimeoutError:
            started = False
        waited = time.monotonic() - sent
        if fair:
            assert started, f"the light user's run waited {waited:.2f} s behind the heavy one"
        else:  # first come, first served: behind every queued run of the heavy user
            assert not started, f"started after {waited:.2f} s even without fair share"
        await socket.wait_terminal(run["id"], timeout=120)
    finally:
        await socket.close()
        await heavy.aclose()
        await light.aclose()
