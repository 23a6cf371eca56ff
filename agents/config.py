"""Settings of the worker, built once per process and handed down."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from agents.pricing import Price
from bridge.limits import EventPathLimits
from servicekit.settings import (
    ServiceSettings,
    api_key_problems,
    model_url_problems,
    secret_problems,
    url_password_problems,
)

__all__ = ["WorkerSettings", "parse_price"]


def parse_price(text: str) -> Price:
    """``"0.20,0.80"``: dollars per million input tokens, then output tokens."""
    parts = text.split(",")
    try:
        values = [Decimal(part.strip()) for part in parts]
    except InvalidOperation:
        values = []
    if len(values) != 2 or not all(v.is_finite() and 0 <= v <= 1_000_000 for v in values):
        raise ValueError("expected two prices in dollars per million tokens, input then "
                         "output: e.g. 0.20,0.80")
    return Price(values[0], values[1])


def _price_text(text: str | None) -> str | None:
    if text is not None:
        parse_price(text)
    return text


class WorkerSettings(ServiceSettings, EventPathLimits):
    """``WORKER_ENVIRONMENT=production`` refuses weak values (``servicekit.settings``)."""

    # history and ingest bounds (WORKER_HISTORY_*, WORKER_EVENT_MAX_BYTES,
    # WORKER_INGEST_MAXLEN: appends retry beyond) come from EventPathLimits

    model_config = SettingsConfigDict(env_prefix="WORKER_")

    # unique per worker process: the queue's consumer name and the liveness key
    worker_id: str = Field(default_factory=lambda: f"worker-{socket.gethostname()}")
    redis_url: str = "redis://127.0.0.1:6379/0"
    # the URL names one node of a Redis Cluster (the others are discovered): stream
    # shards, sharded pub/sub (servicekit.redisclient); off: one Redis
    redis_cluster: bool = False
    concurrency: int = Field(default=50, ge=1)
    # fair share (agents.fairshare): runs start round-robin over users, and one user
    # holds at most this share of the slots (at least one) while another user's runs
    # wait; per worker. Off: first come, first served
    fair_share: bool = True
    max_user_share: float = Field(default=0.25, gt=0, le=1)
    # how far past the head of the queue a worker looks when the head belongs to users
    # at the share: the entries it then reads and does not start go back to the end
    # of the queue at once (a worker holds no run it does not execute). The backend's
    # dispatch window keeps one user's backlog at most BACKEND_DISPATCH_WINDOW_PER_USER
    # entries deep, so a short look finds another user's run; 0: no look
    read_ahead: int = Field(default=16, ge=0)
    run_timeout_s: float = Field(default=120.0, gt=0)
    tool_timeout_s: float = Field(default=10.0, gt=0)
    max_steps: int = Field(default=12, ge=1)
    # the most of a model's streamed answer a run keeps; beyond, the stream is closed
    # and the answer ends with a marker (what the run holds in memory stays bounded)
    max_answer_chars: int = Field(default=32 * 1024, ge=1024)
    # tools whose calls wait for their user's approval (approve_tool / reject_tool),
    # as a JSON list of names (["calculator"]); an unknown name stops the worker
    approval_tools: list[str] = Field(default_factory=list)
    # how long a call waits for the answer; then the run ends agent_cancelled
    # (by approval_timeout). The worker's slot is free meanwhile
    approval_timeout_s: float = Field(default=300.0, gt=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    # a run's lease; a run whose lease lapses is declared lost by the backend
    lease_ttl_s: float = Field(default=6.0, gt=1)
    # queue entries another worker took but never started are re-taken after this
    claim_idle_s: float = Field(default=30.0, gt=1)
    emit_timeout_s: float = Field(default=10.0, gt=0)
    log_level: str = "info"
    # touched at each heartbeat that reached Redis, removed at exit: a container
    # healthcheck reads its age with no process of Python (unset: no file)
    health_file: str | None = None
    # the backend's internal listener (its BACKEND_INTERNAL_PORT), whose internal API
    # serves tools that read the run owner's data
    backend_url: str = "http://127.0.0.1:8010"
    backend_token: SecretStr | None = None  # = the backend's BACKEND_INTERNAL_TOKEN
    # the planner of the built-in agents: deterministic rules, or an OpenAI-compatible
    # chat-completions server (OpenAI, vLLM, Ollama, llama.cpp)
    llm_provider: Literal["builtin", "openai"] = "builtin"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr | None = None  # sent as a bearer token only when set
    openai_model: str = "gpt-4o-mini"
    # per connect / read / write: the longest silence of a streaming answer
    openai_timeout_s: float = Field(default=60.0, gt=0)
    # the sampling temperature sent with each request; unset: none is sent (the
    # server's default). 0 makes a local model's answers repeatable
    openai_temperature: float | None = Field(default=None, ge=0, le=2)
    # the price of openai_model, "input,output" in dollars per million tokens, for
    # the agents' own usage records (agents.usage): a self-hosted model's, or a
    # contract price. Unset: the list price (agents.pricing), or $0 for a model
    # not in it (logged)
    openai_price_per_million: Annotated[str | None, AfterValidator(_price_text)] = None

    def own_prices(self) -> dict[str, Price]:
        """The prices this worker sets itself, by model."""
        if self.openai_price_per_million is None:
            return {}
        return {self.openai_model: parse_price(self.openai_price_per_million)}

    def production_problems(self) -> Mapping[str, Iterable[str]]:
        token = self.backend_token.get_secret_value() if self.backend_token else None
        problems = {"redis_url": url_password_problems(self.redis_url),
                    "backend_token": secret_problems(token)}
        if self.llm_provider == "openai":
            key = self.openai_api_key.get_secret_value() if self.openai_api_key else None
            problems["openai_api_key"] = api_key_problems(self.openai_base_url, key)
            problems["openai_base_url"] = model_url_problems(self.openai_base_url)
        return problems
