"""The WebSocket protocol's client frames: parsing and error frames.

No I/O here, as in :mod:`bridge.delivery` (what a socket sends and when): the
backend's gateway feeds frames in and acts on what comes out, so every rule is
tested without a socket.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from bridge.errors import BridgeError
from servicekit.text import StorableStr

__all__ = [
    "MAX_AFTER",
    "RUN_INPUT_MAX_CHARS",
    "ApprovalBody",
    "ApproveToolMessage",
    "AuthMessage",
    "CancelRunMessage",
    "ClientMessage",
    "Multitask",
    "PingMessage",
    "ProtocolError",
    "ReauthMessage",
    "RejectToolMessage",
    "ResumeCursor",
    "ResumeMessage",
    "RunBody",
    "StartRunMessage",
    "error_frame",
    "parse_client_message",
]

_MAX_ID = 64
#: characters of a run's input, on the socket (start_run) and the REST API alike
RUN_INPUT_MAX_CHARS = 32_000
#: the largest ``after`` a client may send: a seq is a Redis stream id's first part,
#: and ``after + 1`` must stay one (in a signed 64-bit integer, as the REST cursor's)
MAX_AFTER = 2**63 - 2


#: what a new run does while its thread has an active run (docs/protocol.md)
Multitask = Literal["reject", "enqueue", "interrupt"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str | None = Field(default=None, max_length=128)


class RunBody(BaseModel):
    """A new run, as ``POST /api/threads/{id}/runs`` and ``start_run`` take it."""

    input: StorableStr = Field(min_length=1, max_length=RUN_INPUT_MAX_CHARS)
    agent: StorableStr | None = Field(default=None, max_length=_MAX_ID)
    multitask: Multitask = "reject"


class ResumeCursor(BaseModel):
    """Where a client's delivery stopped: replay every event with ``seq > after``."""

    model_config = ConfigDict(extra="forbid")
    after: int = Field(ge=0, le=MAX_AFTER)
    epoch: str | None = Field(default=None, max_length=64)


class AuthMessage(_Message):
    type: Literal["auth"]
    ticket: str | None = Field(default=None, max_length=512)
    token: str | None = Field(default=None, max_length=8192)
    #: resume in the same message: the replay precedes every live event by
    #: construction, however late the client's next frame would have come
    resume: ResumeCursor | None = None


class ReauthMessage(_Message):
    """Renew an open socket's authorization before it expires (same user)."""

    type: Literal["reauth"]
    ticket: str | None = Field(default=None, max_length=512)
    token: str | None = Field(default=None, max_length=8192)


class ResumeMessage(_Message):
    type: Literal["resume"]
    after: int = Field(ge=0, le=MAX_AFTER)
    epoch: str | None = Field(default=None, max_length=64)


class StartRunMessage(_Message, RunBody):
    type: Literal["start_run"]
    thread_id: StorableStr = Field(min_length=1, max_length=_MAX_ID)


class CancelRunMessage(_Message):
    type: Literal["cancel_run"]
    run_id: StorableStr = Field(min_length=1, max_length=_MAX_ID)


class ApprovalBody(BaseModel):
    """An answer to a call waiting for approval: ``POST /api/runs/{id}/approvals/{call}``."""

    model_config = ConfigDict(extra="forbid")
    approve: bool


class _ToolAnswer(_Message):
    run_id: StorableStr = Field(min_length=1, max_length=_MAX_ID)
    call_id: StorableStr = Field(min_length=1, max_length=_MAX_ID)


class ApproveToolMessage(_ToolAnswer):
    type: Literal["approve_tool"]


class RejectToolMessage(_ToolAnswer):
    type: Literal["reject_tool"]


class PingMessage(_Message):
    type: Literal["ping"]


ClientMessage = Annotated[
    AuthMessage | ReauthMessage | ResumeMessage | StartRunMessage | CancelRunMessage
    | ApproveToolMessage | RejectToolMessage | PingMessage,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
_TYPES = frozenset({"auth", "reauth", "resume", "start_run", "cancel_run", "approve_tool",
                    "reject_tool", "ping"})


class ProtocolError(BridgeError):
    """A client frame that the server answers with an error frame."""

    def __init__(self, code: str, message: str, request_id: str | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.extra = extra  # more members of the frame (``retry_after_ms``)

    def frame(self) -> dict[str, Any]:
        return {**error_frame(self.code, self.message, self.request_id), **self.extra}


def error_frame(code: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        frame["request_id"] = request_id
    return frame


def parse_client_message(text: str) -> ClientMessage:
    """Parse one client frame; raises :class:`ProtocolError` with a precise code."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProtocolError("invalid_json", f"frame is not JSON: {exc.args[0]}") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_message", "a frame is a JSON object")
    request_id = data.get("request_id") if isinstance(data.get("request_id"), str) else None
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in _TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}", request_id)
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        fields = ", ".join(
            ".".join(str(p) for p in err["loc"][1:]) + f": {err['msg']}" for err in exc.errors()
        )
        raise ProtocolError("invalid_message", f"invalid {kind}: {fields}", request_id) from None
