"""The one event schema of the contract.

Every agent event a user receives, live or replayed, is an :class:`Event`. Its
``payload`` has the shape of the model registered for its ``type`` in
:data:`PAYLOADS`. ``seq`` and ``epoch`` are assigned by the emit script in Redis,
never by the caller.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "PAYLOADS",
    "TERMINAL_TYPES",
    "AgentCancelled",
    "AgentCompleted",
    "AgentFailed",
    "AgentStarted",
    "AgentThinking",
    "ApprovalRequired",
    "Cause",
    "ErrorInfo",
    "Event",
    "EventType",
    "PartialResult",
    "StoppedBy",
    "ToolCompleted",
    "ToolExecuting",
    "cancelled",
    "completed",
    "failed",
    "parse_timestamp",
    "utc_timestamp",
    "validate_event",
]

EventType = Literal[
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "approval_required",
    "partial_result",
    "agent_completed",
    "agent_failed",
    "agent_cancelled",
]

TERMINAL_TYPES: frozenset[str] = frozenset({"agent_completed", "agent_failed", "agent_cancelled"})


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorInfo(_Payload):
    code: str
    message: str


class AgentStarted(_Payload):
    input: str


class AgentThinking(_Payload):
    text: str
    step: int


class ToolExecuting(_Payload):
    call_id: str
    tool: str
    arguments: dict[str, Any]


class ToolCompleted(_Payload):
    call_id: str
    tool: str
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None
    duration_ms: int

    @model_validator(mode="after")
    def _result_or_error(self) -> ToolCompleted:
        if not self.ok and self.error is None:
            raise ValueError("a failed tool call carries an error")
        return self


class ApprovalRequired(_Payload):
    """A call of a tool that needs its user's approval: the run waits for
    ``approve_tool`` / ``reject_tool`` until ``expires_at`` (a contract timestamp)."""

    call_id: str
    tool: str
    arguments: dict[str, Any]
    expires_at: str


class PartialResult(_Payload):
    delta: str


class AgentCompleted(_Payload):
    result: str
    duration_ms: int
    tool_calls: int


#: why a run failed: its own error, its deadline, or its worker's loss
Cause = Literal["error", "timeout", "worker_lost"]
#: who stopped a cancelled run: its user, a new run on its thread (interrupt), or
#: nobody answering a tool approval in time
StoppedBy = Literal["user", "interrupt", "approval_timeout"]


class AgentFailed(_Payload):
    error: ErrorInfo
    cause: Cause


class AgentCancelled(_Payload):
    by: StoppedBy


# the terminal payloads, built (and checked) by their models: what producers emit
def completed(result: str, *, duration_ms: int, tool_calls: int) -> dict[str, Any]:
    return AgentCompleted(result=result, duration_ms=duration_ms,
                          tool_calls=tool_calls).model_dump()


def failed(code: str, message: str, cause: Cause) -> dict[str, Any]:
    return AgentFailed(error=ErrorInfo(code=code, message=message), cause=cause).model_dump()


def cancelled(by: StoppedBy) -> dict[str, Any]:
    return AgentCancelled(by=by).model_dump()


PAYLOADS: dict[str, type[_Payload]] = {
    "agent_started": AgentStarted,
    "agent_thinking": AgentThinking,
    "tool_executing": ToolExecuting,
    "tool_completed": ToolCompleted,
    "approval_required": ApprovalRequired,
    "partial_result": PartialResult,
    "agent_completed": AgentCompleted,
    "agent_failed": AgentFailed,
    "agent_cancelled": AgentCancelled,
}


class Event(BaseModel):
    """One event as a client receives it."""

    model_config = ConfigDict(extra="forbid")

    type: EventType
    seq: int = Field(ge=1)
    epoch: str = Field(min_length=1)
    run_id: str
    thread_id: str
    agent: str
    ts: str
    payload: dict[str, Any]

    @model_validator(mode="after")
    def _payload_matches_type(self) -> Event:
        PAYLOADS[self.type].model_validate(self.payload)
        return self

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


def validate_event(data: dict[str, Any]) -> Event:
    """Parse and check an event (envelope and payload); raises ``ValidationError``."""
    return Event.model_validate(data)


def parse_timestamp(text: str) -> datetime:
    """A contract timestamp (or any ISO 8601 one, ``Z`` allowed) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def utc_timestamp(now: datetime | None = None) -> str:
    """The contract's timestamp: ISO 8601, UTC, milliseconds, ``Z`` suffix."""
    now = now or datetime.now(UTC)
    # isoformat, not strftime: a few times cheaper, and every event carries one
    return now.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"
