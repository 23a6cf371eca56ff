"""The real entrypoints refuse to start in production with weak settings: exit
status 2 before connecting anywhere, one stderr line per problem naming its
variable, and no secret's value on stdout or stderr.

The services start at once, side by side (each spends seconds importing)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import starts_servers
from tests.production import PASSWORD, without_service_variables

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Start:
    service: str  # as the refusal names it
    argv: tuple[str, ...]
    environment: dict[str, str]
    #: variables the refusal must name
    named: tuple[str, ...]
    #: values passed that must not be printed (the strong ones neither)
    secrets: tuple[str, ...]


STARTS = {
    "auth": Start("auth", ("-m", "auth"), {
        "AUTH_ENVIRONMENT": "production",
        "AUTH_DATABASE_URL": "postgresql://postgres:change-me-postgres@postgres:5432/agentchat",
        "AUTH_REDIS_URL": "redis://:shortpw-7f3a9c@redis:6379/0",
        "AUTH_CORS_ORIGINS": '["*"]',
        "AUTH_FORWARDED_ALLOW_IPS": "*",
    }, ("AUTH_DATABASE_URL", "AUTH_REDIS_URL", "AUTH_CORS_ORIGINS", "AUTH_FORWARDED_ALLOW_IPS"),
        ("change-me-postgres", "shortpw-7f3a9c")),
    "backend": Start("backend", ("-m", "backend"), {
        "BACKEND_ENVIRONMENT": "production",
        "BACKEND_INTERNAL_TOKEN": "dev-insecure-internal-token",
        "BACKEND_DATABASE_URL": "postgresql://app:Tr0ub4dor-3@postgres:5432/agentchat",
        "BACKEND_REDIS_URL": f"redis://:{PASSWORD}@redis:6379/0",
        "BACKEND_CLICKHOUSE_URL": "http://agentchat:change-me-clickhouse@clickhouse:8123",
    }, ("BACKEND_INTERNAL_TOKEN", "BACKEND_DATABASE_URL", "BACKEND_CLICKHOUSE_URL"),
        ("dev-insecure-internal-token", "Tr0ub4dor-3", PASSWORD, "change-me-clickhouse")),
    "worker": Start("worker", ("-m", "agents.worker"), {
        "WORKER_ENVIRONMENT": "production",
        "WORKER_BACKEND_TOKEN": "change-me-internal-token",
        "WORKER_REDIS_URL": f"redis://worker:{PASSWORD}@redis:6379/0",
        "WORKER_LLM_PROVIDER": "openai",
        "WORKER_OPENAI_API_KEY": "sk-placeholder-4d2e",
    }, ("WORKER_BACKEND_TOKEN", "WORKER_OPENAI_API_KEY"),
        ("change-me-internal-token", PASSWORD, "sk-placeholder-4d2e")),
}


@dataclass(frozen=True)
class Outcome:
    status: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
@starts_servers
def outcomes() -> Iterator[dict[str, Outcome]]:
    base = without_service_variables(os.environ)
    processes = {name: subprocess.Popen(
        [sys.executable, *start.argv], cwd=ROOT, env={**base, **start.environment},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, start in STARTS.items()}
    try:
        yield {name: _outcome(process) for name, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def _outcome(process: subprocess.Popen[str]) -> Outcome:
    stdout, stderr = process.communicate(timeout=120)
    return Outcome(process.returncode, stdout, stderr)


@pytest.mark.parametrize("name", sorted(STARTS))
def test_a_weak_production_start_is_refused(name: str, outcomes: dict[str, Outcome]) -> None:
    start, outcome = STARTS[name], outcomes[name]
    assert outcome.status == 2, outcome.stderr
    assert outcome.stdout == ""
    lines = outcome.stderr.splitlines()
    prefix = f"{start.service}: refusing to start: "
    assert lines and all(line.startswith(prefix) for line in lines), outcome.stderr
    named = {line.removeprefix(prefix).partition(":")[0] for line in lines}
    assert named == set(start.named)


@pytest.mark.parametrize("name", sorted(STARTS))
def test_a_refusal_prints_no_secret(name: str, outcomes: dict[str, Outcome]) -> None:
    printed = outcomes[name].stdout + outcomes[name].stderr
    for secret in STARTS[name].secrets:
        assert secret not in printed
