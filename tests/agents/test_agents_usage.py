"""The agents' own spend on the real stack: a worker whose supervisor is the
OpenAI-compatible planner, pointed at a chat-completions server of this test's own (a
real HTTP server on 127.0.0.1 streaming SSE with usage). The analytics API shows the
agents' usage apart from the user's records, and a later spend answer includes it,
to the cent."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from agents.pricing import cents, cost_usd
from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, unique_email
from e2e.stack import LocalStack, StackConfig
from tests.agents.test_openai import content_events, tool_call_events, with_usage
from tests.conftest import starts_servers
from tests.waiting import usage_visible

MODEL = "gpt-4o-mini"
#: (prompt, completion) tokens the server reports: the tool call, then the answer
TOOL_CALL, ANSWER = (1_234_567, 89_012), (987_654, 43_210)
#: the user's own records: (days ago, model, cost)
RECORDS = [(2.5, "gpt-4o", "1.250000"), (3.5, "gpt-4o", "2.105000")]


class ModelServer:
    """Chat completions on 127.0.0.1 (aiohttp, on its own thread and event loop): a
    conversation without a tool result gets a calculator call, one with it the
    answer; each stream ends with its usage chunk. Keeps each request's body."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def __enter__(self) -> ModelServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/v1"

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        if any(message["role"] == "tool" for message in body["messages"]):
            events = with_usage(content_events("17 * 23", " = 391"), *ANSWER)
        else:
            events = with_usage(tool_call_events('{"expression":', '"17 * 23"}'), *TOOL_CALL)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in events:
            await response.write(event)
        await response.write_eof()
        return response


@pytest.fixture(scope="module")
@starts_servers
def model_server() -> Iterator[ModelServer]:
    with ModelServer() as server:
        yield server


@pytest.fixture(scope="module")
@starts_servers
def model_stack(model_server: ModelServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    config = StackConfig.for_tests(tmp_path_factory.mktemp("agents-usage"), env={
        "WORKER_LLM_PROVIDER": "openai", "WORKER_OPENAI_BASE_URL": model_server.url,
        "WORKER_OPENAI_MODEL": MODEL})
    with LocalStack(config) as stack:
        yield stack


async def _finished(client: ChatClient, text: str, agent: str = "supervisor") -> Any:
    run = await client.start_run((await client.create_thread())["id"], text, agent=agent)
    final = await client.wait_run(run["id"], timeout=30)
    assert final["status"] == "succeeded", final
    return final


async def test_the_agents_own_spend_is_recorded_and_answered_apart(
        model_stack: LocalStack, model_server: ModelServer) -> None:
    agents_cost = cost_usd(MODEL, *TOOL_CALL) + cost_usd(MODEL, *ANSWER)
    own = sum((Decimal(cost) for *_, cost in RECORDS), Decimal(0))
    async with ChatClient(model_stack.auth_url, model_stack.backend_url()) as client:
        await client.signup(unique_email("agents-usage"), PASSWORD)
        now = datetime.now(UTC)
        assert await client.post_usage([
            {"ts": (now - timedelta(days=ago)).isoformat(), "model": model,
             "prompt_tokens": 100, "completion_tokens": 50, "cost_usd": cost,
             "latency_ms": 500, "status": "ok"} for ago, model, cost in RECORDS]) == 2
        await usage_visible(client, len(RECORDS))

        answered = await _finished(client, "what is 17 * 23")
        assert answered["result"] == "17 * 23 = 391"
        # the answer's tokens as the provider counted them, kept for the thread's memory
        conn = await asyncpg.connect(model_stack.database_url)
        try:
            assert await conn.fetchval("SELECT answer_tokens FROM app.runs WHERE id = $1",
                                       answered["id"]) == ANSWER[1]
        finally:
            await conn.close()
        assert [len(body["messages"]) for body in model_server.requests] == [2, 4]
        assert all(body["stream_options"] == {"include_usage": True} and body["model"] == MODEL
                   for body in model_server.requests)

        # the run's two model calls reach ClickHouse, as the user's, marked the agents'
        await usage_visible(client, len(RECORDS) + 2)
        items = {item["key"]: item for item in (await client.usage())["items"]}
        mini = items[MODEL]
        assert {k: v for k, v in mini.items() if k != "p50_latency_ms"} == {
            "key": MODEL, "requests": 2,
            "prompt_tokens": TOOL_CALL[0] + ANSWER[0],
            "completion_tokens": TOOL_CALL[1] + ANSWER[1],
            "cost_usd": float(agents_cost), "agents_requests": 2,
            "agents_cost_usd": float(agents_cost)}
        assert mini["p50_latency_ms"] > 0
        assert (items["gpt-4o"]["requests"], items["gpt-4o"]["agents_requests"],
                items["gpt-4o"]["agents_cost_usd"]) == (2, 0, 0.0)

        # a later spend question (the rules of the data agent) counts it, apart
        report = (await _finished(client, "how much did I spend in the last 7 days?",
                                  agent="data"))["result"]
        assert report.splitlines() == [
            f"Over the last 7 days you spent {cents(own + agents_cost)} on 4 requests "
            "across 2 models:",
            f"- gpt-4o: 2 requests, {cents(own)}",
            f"- {MODEL}: 2 requests, {cents(agents_cost)}",
            f"Of this, this platform's agents spent {cents(agents_cost)} (2 model calls)."]
