"""The OpenAI-compatible planner against a real model: llama.cpp's server on
Qwen2.5-Coder-0.5B-Instruct (tests/model.py), the real runtime, a real Redis.

Each run goes the whole way: ``OpenAIPlanner`` streams chat completions over HTTP
from llama.cpp, ``Runtime`` calls the calculator, and every event goes through
the emit script into the user's stream, from where it is read back and checked.
Sampling is greedy (temperature 0), so a run repeats. This small model tends to
call the tool again after its result instead of answering: a run that does so
ends, by the runtime's step limit, with ``agent_failed`` ``step_limit``, which is
an accepted ending here. What the server streamed is recorded on the way (a
transport that copies the response bytes) to show the arguments' fragments and
the generation speed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from agents.config import WorkerSettings
from agents.context import RunContext
from agents.openai import OpenAIPlanner
from agents.pricing import Price
from agents.runtime import Agent, Runtime
from agents.tools import CALCULATOR, ToolRegistry
from agents.usage import AGENTS_SOURCE, ModelCall, ModelPrices, usage_rows
from bridge.emitter import EventEmitter, RunEmitter
from bridge.events import TERMINAL_TYPES
from bridge.streams import UserStreams
from e2e.checks import check_run_invariants, check_schema, check_sequence
from e2e.stack import LocalStack
from tests.conftest import emptied
from tests.model import LlamaServer

pytestmark = pytest.mark.timeout(600)

SYSTEM_PROMPT = ("You are a helpful assistant. Use the calculator tool for arithmetic; "
                 "answer other questions directly, in one short sentence.")
ARITHMETIC = "What is 1234 * 5678? Use the calculator."
PLAIN = "What is the capital of France? Answer in one sentence."
RUN_DEADLINE_S = 240.0
MAX_STEPS = 3


class _Tee(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, sink: bytearray) -> None:
        self._inner = inner
        self._sink = sink

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._sink += chunk
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class RecordingTransport(httpx.AsyncBaseTransport):
    """A real HTTP transport that keeps each request's body and a copy of each
    response's bytes."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.requests: list[dict[str, Any]] = []
        self.responses: list[bytearray] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(json.loads(await request.aread()))
        response = await self._inner.handle_async_request(request)
        sink = bytearray()
        self.responses.append(sink)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=_Tee(response.stream, sink),
                              extensions=response.extensions)

    async def aclose(self) -> None:
        await self._inner.aclose()


def chunks(raw: bytes) -> list[dict[str, Any]]:
    """The JSON chunks of one recorded server-sent event stream."""
    found = []
    for event in raw.decode().replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(line[5:].lstrip() for line in event.splitlines()
                         if line.startswith("data:"))
        if data and data != "[DONE]":
            found.append(json.loads(data))
    return found


def argument_fragments(stream: list[dict[str, Any]]) -> list[str]:
    return [call["function"]["arguments"]
            for chunk in stream for choice in chunk.get("choices", [])
            for call in (choice.get("delta") or {}).get("tool_calls") or []
            if (call.get("function") or {}).get("arguments")]


@dataclass
class RealRun:
    question: str
    ending: str
    events: list[dict[str, Any]]
    requests: list[dict[str, Any]]  # each request's body, in order
    streams: list[list[dict[str, Any]]]  # each response's chunks, in order
    seconds: float
    timings: list[dict[str, Any]] = field(default_factory=list)  # llama.cpp's, per request
    model_calls: list[ModelCall] = field(default_factory=list)  # what the run recorded

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e["payload"] for e in self.events if e["type"] == kind]

    def report(self) -> str:
        tokens = sum(t.get("predicted_n", 0) for t in self.timings)
        generating = sum(t.get("predicted_ms", 0.0) for t in self.timings) / 1000
        speed = f"{tokens / generating:.1f} tokens/s" if generating else "no timings"
        terminal = self.events[-1]["payload"]
        how = (terminal.get("error", {}).get("code") if self.ending == "agent_failed"
               else "answer")
        return (f"{self.question!r}: {self.ending} ({how}) in {self.seconds:.1f} s, "
                f"{len(self.streams)} requests, {tokens} tokens generated, {speed}")


async def real_run(redis: Redis, llama: LlamaServer, *, user: str, question: str,
                   max_steps: int = MAX_STEPS) -> RealRun:
    settings = WorkerSettings(llm_provider="openai", openai_base_url=llama.base_url,
                              openai_model=llama.model, openai_api_key=None,
                              openai_temperature=0.0, openai_timeout_s=120.0)
    transport = RecordingTransport()
    tools = ToolRegistry([CALCULATOR])
    planner = OpenAIPlanner(settings, tools, system_prompt=SYSTEM_PROMPT, transport=transport)
    agent = Agent("assistant", "Answers, with a calculator.", planner, tools)
    run_id = f"run_{user}"
    emitter = RunEmitter(EventEmitter(redis), user_id=user, run_id=run_id,
                         thread_id=f"thr_{user}", agent=agent.name)
    ctx = RunContext(run_id=run_id, user_id=user, thread_id=f"thr_{user}", agent=agent.name,
                     input=question, emitter=emitter,
                     deadline=asyncio.get_running_loop().time() + RUN_DEADLINE_S)
    started = time.monotonic()
    try:
        ending = await Runtime(max_steps=max_steps, tool_timeout_s=10).run(ctx, agent)
    finally:
        await planner.aclose()
    seconds = time.monotonic() - started
    page = await UserStreams(redis).read_after(user, 0)
    events = [json.loads(raw) for _, raw in page.events]
    streams = [chunks(bytes(raw)) for raw in transport.responses]
    timings = [c["timings"] for s in streams for c in s if isinstance(c.get("timings"), dict)]
    run = RealRun(question, ending, events, transport.requests, streams, seconds, timings,
                  list(ctx.model_calls))
    print(run.report())
    return run


@pytest.fixture(scope="module")
async def llm_redis(redis_server: LocalStack) -> AsyncIterator[Redis]:
    async with emptied(redis_server.redis_url) as client:
        yield client


@pytest.fixture(scope="module")
async def arithmetic(llm_redis: Redis, llama: LlamaServer) -> RealRun:
    return await real_run(llm_redis, llama, user="usr_llm_arith", question=ARITHMETIC)


@pytest.fixture(scope="module")
async def plain(llm_redis: Redis, llama: LlamaServer) -> RealRun:
    return await real_run(llm_redis, llama, user="usr_llm_plain", question=PLAIN)


def test_an_arithmetic_question_calls_the_calculator_and_ends_cleanly(
        arithmetic: RealRun) -> None:
    first_request = arithmetic.streams[0]
    # the server streamed the call's arguments in pieces; the planner joined them
    assert len(argument_fragments(first_request)) > 1, first_request
    calls, results = arithmetic.of("tool_executing"), arithmetic.of("tool_completed")
    assert calls and len(calls) == len(results) <= MAX_STEPS
    assert calls[0]["tool"] == "calculator"
    expression = calls[0]["arguments"]["expression"]
    assert expression.replace(" ", "") == "1234*5678"
    assert results[0]["ok"] is True
    assert results[0]["result"] == {"expression": expression, "value": 7006652}
    # the result went back to the model with the next request
    assert len(arithmetic.requests) >= 2
    sent_back = [m for m in arithmetic.requests[1]["messages"] if m["role"] == "tool"]
    assert [json.loads(m["content"])["value"] for m in sent_back] == [7006652]
    assert all(r["temperature"] == 0.0 for r in arithmetic.requests)
    terminal = arithmetic.events[-1]
    if arithmetic.ending == "agent_completed":
        deltas = [p["delta"] for p in arithmetic.of("partial_result")]
        assert deltas and "".join(deltas) == terminal["payload"]["result"]
    else:  # the model called the tool again and again: the step limit ended it
        assert arithmetic.ending == "agent_failed"
        assert len(calls) == MAX_STEPS
        assert terminal["payload"] == {"cause": "error", "error": {
            "code": "step_limit",
            "message": f"no answer within {MAX_STEPS} steps (the run's step limit)"}}


def test_a_plain_question_is_answered_in_streamed_pieces(plain: RealRun) -> None:
    assert plain.ending == "agent_completed", plain.events[-1]
    assert plain.of("tool_executing") == []
    deltas = [p["delta"] for p in plain.of("partial_result")]
    answer = plain.events[-1]["payload"]["result"]
    assert len(deltas) >= 3, deltas
    assert "".join(deltas) == answer
    assert "Paris" in answer
    # the deltas are the model's own pieces, as the server sent them
    sent = [d["content"] for c in plain.streams[0] for choice in c.get("choices", [])
            if (d := choice.get("delta") or {}).get("content")]
    assert deltas == sent


def test_each_model_call_is_recorded_with_the_servers_own_usage(arithmetic: RealRun,
                                                                plain: RealRun) -> None:
    """The agents' own usage: a record per request, its tokens those llama.cpp
    reported in its stream's usage chunk, priced at the worker's own price of its
    model and marked as the agents'."""
    for run in (arithmetic, plain):
        reported = [next(c["usage"] for c in stream if c.get("usage")) for stream in run.streams]
        assert [(c.prompt_tokens, c.completion_tokens) for c in run.model_calls] == [
            (u["prompt_tokens"], u["completion_tokens"]) for u in reported]
        assert all(c.status == "ok" and c.latency_ms > 0 for c in run.model_calls)
        assert all(u["prompt_tokens"] > 0 and u["completion_tokens"] > 0 for u in reported)
        price = Price(input_per_million=Decimal("0.10"), output_per_million=Decimal("0.40"))
        rows = usage_rows("usr_llm", run.model_calls, ModelPrices({run.model_calls[0].model:
                                                                   price}))
        for row, used in zip(rows, reported, strict=True):
            assert row["source"] == AGENTS_SOURCE and row["user_id"] == "usr_llm"
            expected = (Decimal("0.10") * used["prompt_tokens"]
                        + Decimal("0.40") * used["completion_tokens"]) / 1_000_000
            assert Decimal(row["cost_usd"]) == expected.quantize(Decimal("0.000001"),
                                                                  rounding=ROUND_HALF_UP)


def test_every_event_of_the_real_runs_keeps_the_contract(arithmetic: RealRun,
                                                         plain: RealRun) -> None:
    for run in (arithmetic, plain):
        assert_contract(run.events)


def assert_contract(events: list[dict[str, Any]]) -> None:
    """The project's own checks, then the same rules stated here as well."""
    run_id = events[0]["run_id"]
    assert {e["run_id"] for e in events} == {run_id}
    assert check_schema(events) == []
    assert check_sequence(events, first=1) == []
    assert check_run_invariants(events, [run_id]) == []
    types = [e["type"] for e in events]
    assert types[0] == "agent_started" and types.count("agent_started") == 1
    assert [t for t in types if t in TERMINAL_TYPES] == [types[-1]]
    seqs = [e["seq"] for e in events]
    assert all(a < b for a, b in itertools.pairwise(seqs))
    at: dict[str, list[int]] = {}  # call_id -> where its call and its result are
    for n, event in enumerate(events):
        if event["type"] in ("tool_executing", "tool_completed"):
            at.setdefault(event["payload"]["call_id"], []).append(n)
    for call_id, positions in at.items():
        assert len(positions) == 2, call_id
        assert events[positions[0]]["type"] == "tool_executing", call_id
        assert events[positions[1]]["type"] == "tool_completed", call_id
