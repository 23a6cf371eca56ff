"""The run queue: a Redis stream the backend appends to and workers consume.

One entry per run to execute; a consumer group (``workers``) hands each entry to
exactly one worker, which acknowledges it when the run has ended.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RunRequest"]


@dataclass(frozen=True, slots=True)
class RunRequest:
    run_id: str
    user_id: str
    thread_id: str
    agent: str
    input: str
    #: the thread's earlier turns, as JSON (``[{"input", "answer"}...]``, oldest
    #: first, within the backend's memory budget); an entry without it has none
    memory: str = "[]"
    #: "1": the run waited for a tool approval and was answered; the worker resumes
    #: it from its paused state (bridge/approvals.py), not from the start
    resume: str = ""

    def fields(self) -> dict[Any, Any]:
        return asdict(self)

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes] | dict[str, str]) -> RunRequest:
        data = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes)
                else v) for k, v in fields.items()}
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})
