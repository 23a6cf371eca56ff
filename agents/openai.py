"""A planner backed by an OpenAI-compatible chat-completions server.

OpenAI, vLLM, Ollama and llama.cpp all serve ``POST {base_url}/chat/completions``
with ``stream: true`` and function tools; this module keeps to what they share.
Each step rebuilds the whole conversation from the transcript (system prompt, the
user's input, then one assistant tool call and one tool message per outcome), so
one planner serves every run of its agent and holds nothing of any run.

The answer streams: the first content the model sends decides the step is
:class:`Final`, and the rest is handed to the runtime piece by piece as it
arrives. A tool call is read to the end of the stream (its arguments come in
fragments) and becomes a :class:`ToolCall`. Every failure to get a usable answer
raises :class:`ProviderError`, which ends the run with ``agent_failed``.

Each call is recorded in the run's ``transcript.model_calls`` (``agents.usage``)
when it ends: for a tool call, at the end of its stream; for an answer, when its
stream ends, is closed early or fails. The request asks for the usage in the
stream (``stream_options.include_usage``): the tokens are those of the chunk that
carries ``usage`` (a closing chunk with no choices, or the last one with them); a
server that sends none has its calls recorded with 0 tokens (logged once).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
from pydantic import SecretStr

from agents.config import WorkerSettings
from agents.errors import ProviderError
from agents.planner import Decision, Final, ToolCall, Transcript
from agents.tools import ToolRegistry
from agents.usage import ModelCall
from bridge.events import utc_timestamp

__all__ = ["OpenAIPlanner", "OpenAISettings", "make_openai_planner"]

log = logging.getLogger(__name__)

_ERROR_BODY_LIMIT = 16_384
#: a token count beyond this (the usage table's UInt32) is not a count
_MAX_TOKENS = 0xFFFF_FFFF


class OpenAISettings(Protocol):
    """The fields the planner reads; :class:`WorkerSettings` has them."""

    @property
    def openai_base_url(self) -> str: ...
    @property
    def openai_api_key(self) -> SecretStr | None: ...
    @property
    def openai_model(self) -> str: ...
    @property
    def openai_timeout_s(self) -> float: ...
    @property
    def openai_temperature(self) -> float | None: ...


@dataclass
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


class _Meter:
    """One model call, from its request on: appended to the run's calls once, when
    it ends, with the usage its stream reported (None: none came)."""

    def __init__(self, model: str, calls: list[ModelCall]) -> None:
        self._model = model
        self._calls = calls
        self._started = time.monotonic()
        self._ts = utc_timestamp()
        self._ended = False
        self.usage: tuple[int, int] | None = None

    def read(self, usage: Any) -> None:
        if isinstance(usage, dict):  # OpenAI sends "usage": null in the other chunks
            self.usage = (_tokens(usage.get("prompt_tokens")),
                          _tokens(usage.get("completion_tokens")))

    def end(self, status: Literal["ok", "error"]) -> bool:
        """Record the call (the first time only); whether it was recorded now."""
        if self._ended:
            return False
        self._ended = True
        prompt, completion = self.usage or (0, 0)
        self._calls.append(ModelCall(
            self._model, prompt, completion, status=status, ts=self._ts,
            latency_ms=math.ceil((time.monotonic() - self._started) * 1000)))
        return True


class OpenAIPlanner:
    """One step is one streamed chat completion. The HTTP client (a connection
    pool) is shared; closing it is :meth:`aclose`'s job."""

    def __init__(self, settings: OpenAISettings, tools: ToolRegistry, *, system_prompt: str,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._url = settings.openai_base_url.rstrip("/") + "/chat/completions"
        self._model = settings.openai_model
        self._temperature = settings.openai_temperature
        self._system_prompt = system_prompt
        self._tools = [{"type": "function", "function": tool.schema()} for tool in tools]
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        self._key = key  # kept only to scrub it from error messages
        headers = {"Accept": "text/event-stream"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(transport=transport, headers=headers,
                                         timeout=httpx.Timeout(settings.openai_timeout_s))
        self._told_no_usage = False  # about the server, said once: no run's data

    async def aclose(self) -> None:
        await self._client.aclose()

    async def next_step(self, transcript: Transcript) -> Decision:
        body = self._body(transcript)
        meter = _Meter(self._model, transcript.model_calls)
        try:
            response = await self._open(body)
        except BaseException:
            self._end(meter, "error")
            raise
        deltas = self._deltas(response, meter)
        try:
            decision = await self._decide(deltas, meter)
        except BaseException:
            await deltas.aclose()
            await response.aclose()  # the generator may never have started
            self._end(meter, "error")
            raise
        if not isinstance(decision, Final):  # a tool call: its stream was read to the end
            self._end(meter, "ok")
        return decision

    def _end(self, meter: _Meter, status: Literal["ok", "error"]) -> None:
        if meter.end(status) and status == "ok" and meter.usage is None \
                and not self._told_no_usage:
            self._told_no_usage = True
            log.warning("the model server at %s sends no usage in its stream: the agents' "
                        "calls are recorded with 0 tokens", self._url)

    def _body(self, transcript: Transcript) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [{"role": "system", "content": self._system_prompt}]
        for turn in transcript.history:  # the thread's memory, oldest first
            # what that turn's tools returned, summarised, heads its answer (one
            # assistant message: every chat template takes that, where a system
            # message mid-conversation is refused by some)
            answer = (f"[tool results: {turn.tools}]\n{turn.answer}" if turn.tools
                      else turn.answer)
            messages += [{"role": "user", "content": turn.input},
                         {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": transcript.input})
        for n, outcome in enumerate(transcript.outcomes, 1):
            call_id = f"call_{n}"  # stable: the same transcript gives the same messages
            messages.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": call_id, "type": "function",
                "function": {"name": outcome.call.tool,
                             "arguments": json.dumps(outcome.call.arguments)}}]})
            result = outcome.result if outcome.ok else {"error": outcome.result}
            messages.append({"role": "tool", "tool_call_id": call_id,
                             "content": json.dumps(result, ensure_ascii=False)})
        body: dict[str, Any] = {"model": self._model, "messages": messages, "stream": True,
                                "stream_options": {"include_usage": True}}
        if self._temperature is not None:
            body["temperature"] = self._temperature
        if self._tools:  # OpenAI refuses parallel_tool_calls without tools
            body.update(tools=self._tools, parallel_tool_calls=False)
        return body

    async def _open(self, body: dict[str, Any]) -> httpx.Response:
        request = self._client.build_request("POST", self._url, json=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code < 400:
            return response
        try:
            raw = bytearray()
            async for chunk in response.aiter_bytes():
                raw += chunk
                if len(raw) >= _ERROR_BODY_LIMIT:
                    break
        except httpx.HTTPError:
            pass  # the status alone still says what went wrong
        finally:
            await response.aclose()
        detail = _error_message(bytes(raw[:_ERROR_BODY_LIMIT]))
        message = f"the model provider answered HTTP {response.status_code}"
        raise ProviderError(self._scrub(f"{message}: {detail}" if detail else message),
                            status=response.status_code)

    async def _deltas(self, response: httpx.Response, meter: _Meter
                      ) -> AsyncGenerator[dict[str, Any], None]:
        """The ``delta`` of each chunk's first choice (a chunk's usage goes to the
        meter); the response is closed when this ends, is closed, or is cancelled."""
        events = _sse_data(response.aiter_lines())
        try:
            async for data in events:
                if data == "[DONE]":
                    return
                delta = self._delta(data, meter)
                if delta is not None:
                    yield delta
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        finally:
            await events.aclose()
            await response.aclose()

    def _delta(self, data: str, meter: _Meter) -> dict[str, Any] | None:
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise ProviderError(f"malformed chunk in the model's stream: {data[:200]!r}"
                                ) from None
        if not isinstance(chunk, dict):
            raise ProviderError(f"malformed chunk in the model's stream: {data[:200]!r}")
        if "error" in chunk:  # OpenAI and vLLM report failures inside the stream too
            raise ProviderError(self._scrub(
                f"the model provider failed mid-stream: {_describe(chunk['error'])}"))
        meter.read(chunk.get("usage"))
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise ProviderError(f"chunk without choices in the model's stream: {data[:200]!r}")
        if not choices:
            return None  # e.g. the closing usage chunk
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if delta is None:
            return {}  # a bare finish_reason
        if not isinstance(delta, dict):
            raise ProviderError(f"malformed delta in the model's stream: {data[:200]!r}")
        return delta

    async def _decide(self, deltas: AsyncGenerator[dict[str, Any], None], meter: _Meter
                      ) -> Decision:
        # content is held while blank; once a tool call began, content is its thought
        held: list[str] = []
        calls: dict[int, _PendingCall] = {}
        async for delta in deltas:
            fragments = delta.get("tool_calls")
            if fragments:
                _add_fragments(calls, fragments)
            content = delta.get("content")
            if isinstance(content, str) and content:
                held.append(content)
                if not calls and content.strip():
                    return Final("", stream=self._answer(held, deltas, meter))
        if not calls:
            raise ProviderError("the model's stream ended without content or a tool call")
        first = calls[min(calls)]
        if len(calls) > 1:
            log.warning("the model asked for %d tool calls at once; calling only %s",
                        len(calls), first.name)
        if not first.name:
            raise ProviderError("the model's tool call has no function name")
        return ToolCall(first.name, _arguments(first.arguments),
                        thought="".join(held).strip() or f"Calling {first.name}.")

    async def _answer(self, head: list[str], deltas: AsyncGenerator[dict[str, Any], None],
                      meter: _Meter) -> AsyncIterator[str]:
        """The answer's pieces: those already read, then the rest as they arrive. The
        call is recorded when this ends: ``ok`` only when the stream was read whole."""
        whole = False
        try:
            for piece in head:
                yield piece
            async for delta in deltas:
                if delta.get("tool_calls"):
                    raise ProviderError("the model called a tool after it began its answer")
                content = delta.get("content")
                if isinstance(content, str) and content:
                    yield content
            whole = True
        finally:
            try:
                await deltas.aclose()
            finally:
                self._end(meter, "ok" if whole else "error")

    def _transport_error(self, exc: httpx.HTTPError) -> ProviderError:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        return ProviderError(self._scrub(
            f"the request to {self._url} {kind}: {type(exc).__name__} {exc}".rstrip()))

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def make_openai_planner(settings: WorkerSettings, tools: ToolRegistry, *,
                        system_prompt: str) -> OpenAIPlanner:
    return OpenAIPlanner(settings, tools, system_prompt=system_prompt)


async def _sse_data(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """The data of each server-sent event; comments and other fields are skipped."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _add_fragments(calls: dict[int, _PendingCall], fragments: Any) -> None:
    if not isinstance(fragments, list):
        raise ProviderError("malformed tool_calls in the model's stream")
    for fragment in fragments:
        if not isinstance(fragment, dict):
            raise ProviderError("malformed tool_calls in the model's stream")
        index, call_id = fragment.get("index"), fragment.get("id")
        if not isinstance(index, int):  # older Ollama sends whole calls without an index
            same = [n for n, call in calls.items() if call_id and call.id == call_id]
            if same:
                index = same[0]
            elif calls:
                index = max(calls) + 1 if call_id else max(calls)
            else:
                index = 0
        call = calls.setdefault(index, _PendingCall())
        if isinstance(call_id, str) and not call.id:
            call.id = call_id
        function = fragment.get("function") or {}
        if not isinstance(function, dict):
            raise ProviderError("malformed tool_calls in the model's stream")
        if isinstance(function.get("name"), str):
            call.name += function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            call.arguments += arguments
        elif isinstance(arguments, dict):  # a server that sends them parsed
            call.arguments += json.dumps(arguments)


def _tokens(value: Any) -> int:
    """A usage count as the server sent it; anything else is unknown: 0."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_TOKENS:
        return value
    return 0


def _arguments(text: str) -> dict[str, Any]:
    """The parsed arguments; text that is not a JSON object is passed on as ``_raw``,
    so the tool's validation refuses it and the model hears why."""
    if not text.strip():
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return {"_raw": text}
    return parsed if isinstance(parsed, dict) else {"_raw": text}


def _error_message(raw: bytes) -> str:
    """The server's own message from an error body, in the shapes these servers use:
    ``{"error": {"message": …}}``, ``{"error": "…"}`` or ``{"message": …}``."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:500]
    if isinstance(body, dict):
        if "error" in body:
            return _describe(body["error"])
        if isinstance(body.get("message"), str):
            return str(body["message"])[:500]
    return raw.decode("utf-8", "replace").strip()[:500]


def _describe(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or error)[:500]
    return str(error)[:500]
