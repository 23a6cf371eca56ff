"""The memory a run is given, read off its queue entry on a real stack with no
worker (the entry stays in the queue): the thread's newest answered turns within
the budget, oldest first, and nothing of another thread."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import cast

import asyncpg
import pytest

from bridge.memory import Turn, decode_memory
from bridge.queue import RunRequest
from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, unique_email
from e2e.stack import LocalStack, StackConfig
from servicekit.redisclient import make_redis
from servicekit.rediskeys import RUN_QUEUE
from tests.conftest import starts_servers

#: each earlier turn costs 7 estimated tokens ("question number N": 5, "answer N": 2)
BUDGET = 20


@pytest.fixture(scope="module")
@starts_servers
def no_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    config = StackConfig.for_tests(tmp_path_factory.mktemp("memory"), workers=0,
                                   env={"BACKEND_THREAD_MEMORY_TOKENS": str(BUDGET)})
    with LocalStack(config) as stack:
        yield stack


async def _answered(stack: LocalStack, user_id: str, thread_id: str,
                    turns: list[tuple[str, str]], tools: list[str | None] | None = None,
                    answer_tokens: list[int | None] | None = None) -> None:
    """Earlier runs of the thread, answered (as the lifecycle would have left them)."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        start = datetime.now(UTC) - timedelta(hours=1)
        for n, (question, answer) in enumerate(turns):
            at = start + timedelta(minutes=n)
            await conn.execute(
                "INSERT INTO app.runs (id, thread_id, user_id, agent, status, input, result, "
                "created_at, started_at, finished_at, dispatched_at, tools_note, answer_tokens) "
                "VALUES ($1, $2, $3, 'supervisor', 'succeeded', $4, $5, $6, $6, $6, $6, $7, $8)",
                f"run_mem_{uuid.uuid4().hex}", thread_id, user_id, question, answer, at,
                (tools or [None] * len(turns))[n], (answer_tokens or [None] * len(turns))[n])
    finally:
        await conn.close()


async def _memory_of(stack: LocalStack, run_id: str) -> tuple[Turn, ...]:
    redis = make_redis(stack.redis_url)
    try:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(RUN_QUEUE))
    finally:
        await redis.aclose()
    request = next(r for r in (RunRequest.from_fields(f) for _, f in entries)
                   if r.run_id == run_id)
    return decode_memory(request.memory)


async def test_a_run_gets_its_threads_newest_turns_within_the_budget(
        no_worker: LocalStack) -> None:
    async with ChatClient(no_worker.auth_url, no_worker.backend_url()) as client:
        await client.signup(unique_email("memory"), PASSWORD)
        user_id = client.user["id"]
        thread, other = await client.create_thread(), await client.create_thread()
        await _answered(no_worker, user_id, thread["id"],
                        [(f"question number {n}", f"answer {n}") for n in range(4)])
        await _answered(no_worker, user_id, other["id"], [("secret question", "secret")])
        run = await client.start_run(thread["id"], "and then?")
        assert await _memory_of(no_worker, run["id"]) == (
            Turn("question number 2", "answer 2"), Turn("question number 3", "answer 3"))
        fresh = await client.start_run((await client.create_thread())["id"], "hello")
        assert await _memory_of(no_worker, fresh["id"]) == ()


async def test_a_turn_brings_what_its_tools_returned_within_the_budget(
        no_worker: LocalStack) -> None:
    note = 'calculator {"expression":"6*7"} -> 42'  # 10 estimated tokens
    async with ChatClient(no_worker.auth_url, no_worker.backend_url()) as client:
        await client.signup(unique_email("memory"), PASSWORD)
        thread = await client.create_thread()
        await _answered(no_worker, client.user["id"], thread["id"],
                        [("question number 0", "answer 0"), ("question number 1", "answer 1")],
                        tools=[None, note])
        run = await client.start_run(thread["id"], "and then?")
        # the newest turn with its note (7 + 10 tokens) leaves no room for the older one
        assert await _memory_of(no_worker, run["id"]) == (
            Turn("question number 1", "answer 1", tools=note),)


async def test_an_answers_counted_tokens_take_the_place_of_the_estimate(
        no_worker: LocalStack) -> None:
    async with ChatClient(no_worker.auth_url, no_worker.backend_url()) as client:
        await client.signup(unique_email("memory"), PASSWORD)
        thread = await client.create_thread()
        long = "x" * 400  # estimated at 100 tokens: over the budget alone
        await _answered(no_worker, client.user["id"], thread["id"],
                        [("question number 0", "answer 0"), ("question number 1", long)],
                        answer_tokens=[None, 3])
        run = await client.start_run(thread["id"], "and then?")
        # counted by the provider at 3 tokens, the long answer fits, and the older turn
        assert await _memory_of(no_worker, run["id"]) == (
            Turn("question number 0", "answer 0"),
            Turn("question number 1", long, answer_tokens=3))
