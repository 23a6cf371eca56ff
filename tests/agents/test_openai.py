"""OpenAIPlanner against httpx.MockTransport: the streams are shaped like the real
chat-completions SSE (chunk objects, blank-line separated, a finish chunk, [DONE])."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest

from agents.config import WorkerSettings
from agents.errors import AgentError, ProviderError, ToolArgumentsError
from agents.openai import OpenAIPlanner, make_openai_planner
from agents.planner import Final, ToolCall, ToolOutcome, Transcript
from agents.tools import CALCULATOR, ToolRegistry
from bridge.memory import Turn

KEY = "sk-test-0123456789abcdef"
Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    body = {"id": "chatcmpl-AZx81Gq2kLmN0pQrStUvWxYz", "object": "chat.completion.chunk",
            "created": 1730000000, "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_0ba0d124f1",
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}]}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def tool_call_events(*fragments: str, name: str = "calculator") -> list[bytes]:
    first = {"role": "assistant", "content": None, "refusal": None,
             "tool_calls": [{"index": 0, "id": "call_Q2x7", "type": "function",
                             "function": {"name": name, "arguments": ""}}]}
    rest = [chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
            for part in fragments]
    return [chunk(first), *rest, chunk({}, "tool_calls"), DONE]


def content_events(*pieces: str) -> list[bytes]:
    return [chunk({"role": "assistant", "content": "", "refusal": None}),
            *(chunk({"content": piece}) for piece in pieces), chunk({}, "stop"), DONE]


class SSEStream(httpx.AsyncByteStream):
    """Sends one event per read; waits for ``gate`` before event ``gate_at``."""

    def __init__(self, events: list[bytes], gate: asyncio.Event | None = None,
                 gate_at: int = 0) -> None:
        self.events = events
        self.gate = gate
        self.gate_at = gate_at
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for n, event in enumerate(self.events):
            if self.gate is not None and n == self.gate_at:
                await self.gate.wait()
            self.sent += 1
            yield event

    async def aclose(self) -> None:
        self.closed = True


class Server:
    """Records each request and answers with the next stream."""

    def __init__(self, *streams: SSEStream) -> None:
        self.streams = list(streams)
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=self.streams.pop(0))

    def body(self, n: int = 0) -> Any:
        return json.loads(self.requests[n].content)


def settings(key: str | None = KEY) -> WorkerSettings:
    return WorkerSettings(openai_base_url="http://llm.test/v1/", openai_api_key=key,
                          openai_model="test-model", openai_timeout_s=5.0)


def planner(handler: Handler, key: str | None = KEY) -> OpenAIPlanner:
    return OpenAIPlanner(settings(key), ToolRegistry([CALCULATOR]), system_prompt="Be exact.",
                         transport=httpx.MockTransport(handler))


async def collect(stream: AsyncIterator[str] | None) -> list[str]:
    assert stream is not None
    return [piece async for piece in stream]


async def test_a_tool_call_in_fragments_becomes_a_tool_call() -> None:
    stream = SSEStream(tool_call_events('{"', "expression", '":"', "17 * 23", '"}'))
    server = Server(stream)
    step = await planner(server).next_step(Transcript(input="what is 17 * 23"))
    assert step == ToolCall("calculator", {"expression": "17 * 23"},
                            thought="Calling calculator.")
    assert stream.closed


async def test_content_becomes_a_final_streaming_the_pieces_in_order() -> None:
    stream = SSEStream(content_events("17 * 23", " = ", "391", "."))
    step = await planner(Server(stream)).next_step(Transcript(input="what is 17 * 23"))
    assert isinstance(step, Final) and step.answer == ""
    assert await collect(step.stream) == ["17 * 23", " = ", "391", "."]
    assert stream.closed


async def test_the_final_is_returned_while_the_answer_is_still_arriving() -> None:
    gate = asyncio.Event()
    stream = SSEStream(content_events("first", " second"), gate=gate, gate_at=3)
    step = await asyncio.wait_for(
        planner(Server(stream)).next_step(Transcript(input="hi")), 2)
    assert isinstance(step, Final) and step.stream is not None
    assert await anext(step.stream) == "first"
    assert stream.sent == 2 and not stream.closed
    gate.set()
    assert await collect(step.stream) == [" second"]
    assert stream.closed


async def test_the_request_carries_model_tools_and_the_rebuilt_conversation() -> None:
    server = Server(SSEStream(content_events("ok")), SSEStream(content_events("ok")))
    call = ToolCall("calculator", {"expression": "17 * 23"}, thought="Calling calculator.")
    transcript = Transcript(input="what is 17 * 23", outcomes=[
        ToolOutcome(call, True, {"expression": "17 * 23", "value": 391})])
    await collect(_final(await planner(server).next_step(transcript)).stream)
    failed = Transcript(input="what is 1/0", outcomes=[
        ToolOutcome(call, False, {"code": "calculation_error", "message": "division by zero"})])
    await collect(_final(await planner(server, key=None).next_step(failed)).stream)

    request = server.requests[0]
    assert request.method == "POST" and str(request.url) == "http://llm.test/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "authorization" not in server.requests[1].headers
    body = server.body(0)
    assert body["model"] == "test-model" and body["stream"] is True
    assert body["parallel_tool_calls"] is False
    assert body["tools"] == [{"type": "function", "function": {
        "name": "calculator", "description": "Evaluate an arithmetic expression exactly.",
        "parameters": CALCULATOR.arguments.model_json_schema()}}]
    assert body["tools"][0]["function"]["parameters"]["required"] == ["expression"]
    assert body["messages"] == [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "what is 17 * 23"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "calculator", "arguments": '{"expression": "17 * 23"}'}}]},
        {"role": "tool", "tool_call_id": "call_1",
         "content": '{"expression": "17 * 23", "value": 391}'},
    ]
    assert json.loads(server.body(1)["messages"][3]["content"]) == {
        "error": {"code": "calculation_error", "message": "division by zero"}}


async def test_the_threads_memory_goes_before_the_question_as_turns() -> None:
    server = Server(SSEStream(content_events("ok")))
    transcript = Transcript(input="and the week before?", history=(
        Turn("how much did I spend this week?", "$12.30",
             tools='query_usage {"days":7} -> {"items":[]}'),
        Turn("only gpt-4o?", "$8.00")))
    await collect(_final(await planner(server).next_step(transcript)).stream)
    assert server.body(0)["messages"] == [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "how much did I spend this week?"},
        {"role": "assistant",
         "content": '[tool results: query_usage {"days":7} -> {"items":[]}]\n$12.30'},
        {"role": "user", "content": "only gpt-4o?"},
        {"role": "assistant", "content": "$8.00"},
        {"role": "user", "content": "and the week before?"},
    ]


async def test_no_tools_means_no_tool_fields() -> None:
    server = Server(SSEStream(content_events("hi")))
    bare = OpenAIPlanner(settings(), ToolRegistry([]), system_prompt="s",
                         transport=httpx.MockTransport(server))
    await collect(_final(await bare.next_step(Transcript(input="hi"))).stream)
    assert "tools" not in server.body() and "parallel_tool_calls" not in server.body()


async def test_a_temperature_is_sent_only_when_set() -> None:
    server = Server(SSEStream(content_events("a")), SSEStream(content_events("b")))
    await collect(_final(await planner(server).next_step(Transcript(input="hi"))).stream)
    greedy = OpenAIPlanner(settings().model_copy(update={"openai_temperature": 0.0}),
                           ToolRegistry([CALCULATOR]), system_prompt="s",
                           transport=httpx.MockTransport(server))
    await collect(_final(await greedy.next_step(Transcript(input="hi"))).stream)
    assert "temperature" not in server.body(0)
    assert server.body(1)["temperature"] == 0.0


async def test_an_http_error_names_the_status_and_the_servers_message() -> None:
    async def unauthorized(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {
            "message": f"Incorrect API key provided: {KEY}.", "type": "invalid_request_error",
            "param": None, "code": "invalid_api_key"}})

    with pytest.raises(AgentError) as caught:
        await planner(unauthorized).next_step(Transcript(input="hi"))
    assert isinstance(caught.value, ProviderError) and caught.value.status == 401
    message = str(caught.value)
    assert "401" in message and "Incorrect API key provided" in message
    assert KEY not in message


@pytest.mark.parametrize("error", [httpx.ConnectError("Connection refused"),
                                   httpx.ReadTimeout("timed out")])
async def test_an_unreachable_or_slow_server_is_an_agent_error(error: Exception) -> None:
    async def failing(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(ProviderError, match=r"llm\.test"):
        await planner(failing).next_step(Transcript(input="hi"))


async def test_a_malformed_chunk_is_an_agent_error_and_closes_the_response() -> None:
    stream = SSEStream([chunk({"role": "assistant", "content": ""}),
                        b'data: {"id":"chatcmpl-1","choices":[{"delta":\n\n', DONE])
    with pytest.raises(AgentError, match="malformed"):
        await planner(Server(stream)).next_step(Transcript(input="hi"))
    assert stream.closed


async def test_an_error_inside_the_stream_is_an_agent_error() -> None:
    error = b'data: {"error":{"message":"The server had an error","type":"server_error"}}\n\n'
    with pytest.raises(ProviderError, match="The server had an error"):
        await planner(Server(SSEStream([error, DONE]))).next_step(Transcript(input="hi"))


async def test_arguments_that_are_not_json_reach_the_tool_as_raw_and_fail_validation() -> None:
    server = Server(SSEStream(tool_call_events('{"expression": 17 *')))
    step = await planner(server).next_step(Transcript(input="what is 17 * 23"))
    assert isinstance(step, ToolCall)
    assert step.arguments == {"_raw": '{"expression": 17 *'}
    with pytest.raises(ToolArgumentsError, match="expression"):
        CALCULATOR.validate(step.arguments)


async def test_closing_the_answer_early_closes_the_response() -> None:
    stream = SSEStream(content_events("one", "two", "three"))
    step = _final(await planner(Server(stream)).next_step(Transcript(input="hi")))
    assert step.stream is not None
    assert await anext(step.stream) == "one"
    assert not stream.closed
    await step.stream.aclose()  # type: ignore[attr-defined]
    assert stream.closed


async def test_cancelling_the_reader_closes_the_response() -> None:
    gate = asyncio.Event()
    stream = SSEStream(content_events("one", "two"), gate=gate, gate_at=2)
    step = _final(await planner(Server(stream)).next_step(Transcript(input="hi")))
    reader = asyncio.create_task(collect(step.stream))
    await asyncio.sleep(0.05)
    assert not stream.closed
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert stream.closed


async def test_cancelling_while_deciding_closes_the_response() -> None:
    gate = asyncio.Event()
    stream = SSEStream(content_events("one"), gate=gate, gate_at=1)
    deciding = asyncio.create_task(planner(Server(stream)).next_step(Transcript(input="hi")))
    await asyncio.sleep(0.05)
    assert stream.sent == 1 and not stream.closed
    deciding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await deciding
    assert stream.closed


async def test_several_tool_calls_take_the_first_and_warn(
        caplog: pytest.LogCaptureFixture) -> None:
    two = {"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_a", "type": "function",
         "function": {"name": "calculator", "arguments": '{"expression":"1+1"}'}},
        {"index": 1, "id": "call_b", "type": "function",
         "function": {"name": "calculator", "arguments": '{"expression":"2+2"}'}}]}
    server = Server(SSEStream([chunk(two), chunk({}, "tool_calls"), DONE]))
    with caplog.at_level(logging.WARNING, logger="agents.openai"):
        step = await planner(server).next_step(Transcript(input="1+1 and 2+2"))
    assert isinstance(step, ToolCall) and step.arguments == {"expression": "1+1"}
    assert "2 tool calls" in caplog.text


async def test_text_alongside_a_tool_call_is_its_thought() -> None:
    # the shape Ollama sends: one chunk with the text and the whole call, no index
    whole = {"role": "assistant", "content": "Let me compute that.", "tool_calls": [
        {"id": "call_x1", "type": "function",
         "function": {"name": "calculator", "arguments": '{"expression":"6*7"}'}}]}
    server = Server(SSEStream([chunk(whole), chunk({"content": ""}, "tool_calls"), DONE]))
    step = await planner(server).next_step(Transcript(input="6*7?"))
    assert step == ToolCall("calculator", {"expression": "6*7"}, thought="Let me compute that.")


async def test_a_stream_without_content_or_call_is_an_agent_error() -> None:
    with pytest.raises(ProviderError, match="without content"):
        await planner(Server(SSEStream(content_events()))).next_step(Transcript(input="hi"))


async def test_make_openai_planner_reads_the_worker_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_LLM_PROVIDER", "openai")
    monkeypatch.setenv("WORKER_OPENAI_API_KEY", KEY)
    monkeypatch.setenv("WORKER_OPENAI_MODEL", "llama3.1")
    configured = WorkerSettings()
    assert configured.llm_provider == "openai" and KEY not in repr(configured)
    made = make_openai_planner(configured, ToolRegistry([CALCULATOR]), system_prompt="s")
    assert isinstance(made, OpenAIPlanner)
    await made.aclose()


def _final(step: object) -> Final:
    assert isinstance(step, Final)
    return step


def usage_chunk(prompt: int, completion: int) -> bytes:
    """The closing chunk OpenAI, vLLM and llama.cpp send when the request asks for
    ``stream_options.include_usage``: no choices, the call's usage."""
    body = {"id": "chatcmpl-AZx81Gq2kLmN0pQrStUvWxYz", "object": "chat.completion.chunk",
            "created": 1730000000, "model": "gpt-4o-mini-2024-07-18", "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0}}}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def with_usage(events: list[bytes], prompt: int, completion: int) -> list[bytes]:
    """``events`` (ending with [DONE]) with the usage chunk before [DONE]; the other
    chunks carry ``"usage": null``, as OpenAI sends them then."""
    nulled = [event.replace(b'"choices":', b'"usage":null,"choices":') for event in events[:-1]]
    return [*nulled, usage_chunk(prompt, completion), DONE]


async def test_a_tool_call_step_records_the_calls_usage() -> None:
    server = Server(SSEStream(with_usage(tool_call_events('{"expression":"17 * 23"}'),
                                         812, 24)))
    transcript = Transcript(input="what is 17 * 23")
    step = await planner(server).next_step(transcript)
    assert isinstance(step, ToolCall)
    assert server.body()["stream_options"] == {"include_usage": True}
    (call,) = transcript.model_calls
    assert (call.model, call.prompt_tokens, call.completion_tokens, call.status) == (
        "test-model", 812, 24, "ok")
    assert call.latency_ms > 0 and call.ts.endswith("Z")


async def test_a_streamed_answer_is_recorded_when_its_stream_ends() -> None:
    gate = asyncio.Event()
    events = with_usage(content_events("17 * 23", " = 391"), 1030, 7)
    stream = SSEStream(events, gate=gate, gate_at=len(events) - 2)
    transcript = Transcript(input="what is 17 * 23")
    step = _final(await planner(Server(stream)).next_step(transcript))
    assert step.stream is not None
    assert [await anext(step.stream), await anext(step.stream)] == ["17 * 23", " = 391"]
    assert transcript.model_calls == []  # its usage is still to come
    gate.set()
    assert await collect(step.stream) == []
    (call,) = transcript.model_calls
    assert (call.prompt_tokens, call.completion_tokens, call.status) == (1030, 7, "ok")
    assert call.latency_ms > 0


async def test_usage_on_the_last_chunk_with_choices_counts_too() -> None:
    last = chunk({}, "stop").replace(
        b'"choices":', b'"usage":{"prompt_tokens":90,"completion_tokens":3},"choices":')
    stream = SSEStream([*content_events("hi")[:-2], last, DONE])
    transcript = Transcript(input="hi")
    assert await collect(_final(await planner(Server(stream)).next_step(transcript)).stream) \
        == ["hi"]
    assert [(c.prompt_tokens, c.completion_tokens, c.status)
            for c in transcript.model_calls] == [(90, 3, "ok")]


async def test_a_server_without_usage_is_recorded_with_0_tokens_and_said_once(
        caplog: pytest.LogCaptureFixture) -> None:
    server = Server(SSEStream(tool_call_events('{"expression":"1+1"}')),
                    SSEStream(content_events("2")))
    shared = planner(server)
    transcript = Transcript(input="1+1")
    with caplog.at_level(logging.WARNING, logger="agents.openai"):
        assert isinstance(await shared.next_step(transcript), ToolCall)
        await collect(_final(await shared.next_step(transcript)).stream)
    assert [(c.prompt_tokens, c.completion_tokens, c.status)
            for c in transcript.model_calls] == [(0, 0, "ok"), (0, 0, "ok")]
    assert all(c.latency_ms > 0 for c in transcript.model_calls)
    assert caplog.text.count("sends no usage") == 1


async def test_an_answer_closed_early_is_an_error_with_what_was_known() -> None:
    stream = SSEStream(with_usage(content_events("one", "two", "three"), 50, 3))
    transcript = Transcript(input="hi")
    step = _final(await planner(Server(stream)).next_step(transcript))
    assert step.stream is not None
    assert await anext(step.stream) == "one"
    await step.stream.aclose()  # type: ignore[attr-defined]
    assert [(c.prompt_tokens, c.completion_tokens, c.status)
            for c in transcript.model_calls] == [(0, 0, "error")]


async def test_failed_calls_are_recorded_as_errors() -> None:
    async def unavailable(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": {"message": "overloaded"}})

    transcript = Transcript(input="hi")
    with pytest.raises(ProviderError):
        await planner(unavailable).next_step(transcript)
    error = b'data: {"error":{"message":"The server had an error","type":"server_error"}}\n\n'
    with pytest.raises(ProviderError):
        await planner(Server(SSEStream([usage_chunk(7, 0), error, DONE]))).next_step(transcript)
    assert [(c.prompt_tokens, c.completion_tokens, c.status)
            for c in transcript.model_calls] == [(0, 0, "error"), (7, 0, "error")]


@pytest.mark.parametrize("usage", [{"prompt_tokens": -1, "completion_tokens": "3"},
                                   {"prompt_tokens": 2**40, "completion_tokens": True}])
async def test_usage_that_is_not_a_count_is_unknown(usage: dict[str, Any]) -> None:
    odd = b'data: {"choices":[],"usage":' + json.dumps(usage).encode() + b"}\n\n"
    stream = SSEStream([*tool_call_events('{"expression":"1+1"}')[:-1], odd, DONE])
    transcript = Transcript(input="1+1")
    assert isinstance(await planner(Server(stream)).next_step(transcript), ToolCall)
    assert [(c.prompt_tokens, c.completion_tokens) for c in transcript.model_calls] == [(0, 0)]
