"""The context of one run: who, where, its emitter, its deadline and how it stops.

Made per run and never shared: nothing of a user lives anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bridge.emitter import RunEmitter

__all__ = ["RunContext", "StopReason"]

StopReason = Literal["user", "interrupt", "worker_lost"]


@dataclass
class RunContext:
    run_id: str
    user_id: str
    thread_id: str
    agent: str
    input: str
    emitter: RunEmitter
    deadline: float  # event-loop time
    stop_reason: StopReason | None = None
    tool_calls: int = field(default=0)
