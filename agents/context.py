"""The context of one run: who, where, its emitter, its deadline and how it stops.

Made per run and never shared: nothing of a user lives anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agents.backend_client import BackendClient
from agents.usage import ModelCall
from bridge.approvals import Approvals
from bridge.emitter import RunEmitter
from bridge.events import StoppedBy
from bridge.memory import Turn

__all__ = ["RunContext", "Services", "StopReason", "ToolRecord"]

#: who stopped the run: its user, a new run on its thread, or its worker's shutdown
StopReason = StoppedBy | Literal["worker_lost"]


@dataclass(frozen=True)
class Services:
    """What tools may use besides their arguments; shared by the worker's runs and
    holding no user data (a tool passes the run's ``user_id`` itself)."""

    backend: BackendClient | None = None
    # where a run paused on a tool approval is stored (None: no tool may pause)
    approvals: Approvals | None = None


@dataclass(frozen=True)
class ToolRecord:
    """One tool call of the run, for the analytics ``tool_calls`` table."""

    tool: str
    agent: str
    ok: bool
    error_code: str
    duration_ms: int
    ts: str


@dataclass
class RunContext:
    run_id: str
    user_id: str
    thread_id: str
    agent: str
    input: str
    emitter: RunEmitter
    deadline: float  # event-loop time
    services: Services = field(default_factory=Services)
    # the thread's earlier turns, oldest first (bridge.memory), read by the planner
    memory: tuple[Turn, ...] = ()
    stop_reason: StopReason | None = None
    # set by the worker once a stop request may cancel the run's task (before, the
    # worker only records the request and ends the run itself when it begins)
    cancellable: bool = False
    # set once the stop is being handled: the run is being ended, and a repeated
    # request must not interrupt the emit of its terminal event
    stopping: bool = False
    tool_calls: int = field(default=0)
    tool_records: list[ToolRecord] = field(default_factory=list)
    # the run's calls to a model, for the analytics usage table (agents.usage)
    model_calls: list[ModelCall] = field(default_factory=list)
