"""Request body limits, enforced while the body streams in, before anything parses it.

A pure ASGI middleware, added first to a service's app so that only middleware that
reads no body wraps it (request metrics, CORS): no routing, parsing, dependency or
authentication runs before it has its say.

- A ``Content-Length`` over the route's cap is refused at once; not a byte of the
  body is read (nor ``100 Continue`` sent).
- A body without one (``Transfer-Encoding: chunked``) is counted as the app reads
  it and refused as soon as it passes the cap: never held whole, so a 50 MB upload
  costs the server what uvicorn buffers per connection (64 KiB), not 50 MB.

The refusal is ``413`` with a problem document (``payload_too_large``, the limit in
``limit_bytes``) and ``Connection: close``: the rest of the body is not read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit.problems import problem

__all__ = ["BodyLimit", "BodyLimits"]


@dataclass(frozen=True)
class BodyLimits:
    """The largest request body, in bytes: ``default``, or the cap of a route named
    by method and path (``("POST", "/api/analytics/usage")``)."""

    default: int
    routes: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default < 0 or any(cap < 0 for cap in self.routes.values()):
            raise ValueError("a body limit cannot be negative")

    def limit(self, method: str, path: str) -> int:
        return self.routes.get((method.upper(), path), self.default)


class _TooLarge(Exception):
    """The body passed its cap while the app was reading it (answered already)."""


class BodyLimit:
    """Refuses request bodies over :class:`BodyLimits` with 413 (module docstring)."""

    def __init__(self, app: ASGIApp, *, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.limit(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None:
            # uvicorn never hands an app more than the declared length
            if declared > limit:
                await _refuse(scope, receive, send, limit)
            else:
                await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not started:
                        refused = True
                        await _refuse(scope, receive, send, limit)
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:  # the 413 was the answer; what the app makes of the error is not
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        # answered with 413; or the app had begun its answer before reading the body
        # past the cap: uvicorn closes the connection on the unfinished answer
        with contextlib.suppress(_TooLarge):
            await self.app(scope, counting_receive, guarded_send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before any app runs
    return None


async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = problem(413, "payload_too_large",
                       f"the request body is larger than this route's limit of {limit} bytes",
                       {"Connection": "close"}, limit_bytes=limit)
    await response(scope, receive, send)
