"""WorkerSettings: nothing to configure in development; production refuses weak values."""

from __future__ import annotations

from typing import Any

import pytest

from agents.config import WorkerSettings
from tests.production import PASSWORD, TOKEN, clear_service_variables, refusals

STRONG: dict[str, Any] = {
    "environment": "production",
    "redis_url": f"redis://worker:{PASSWORD}@redis:6379/0",
    "backend_token": TOKEN,
}
OPENAI_KEY = "sk-proj-" + TOKEN


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_service_variables(monkeypatch)


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_and_test_run_on_the_defaults(environment: str) -> None:
    assert WorkerSettings(environment=environment).backend_token is None


def test_the_environment_comes_from_worker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerSettings().environment == "development"
    monkeypatch.setenv("WORKER_ENVIRONMENT", "test")
    assert WorkerSettings().environment == "test"


def test_production_refuses_the_development_defaults() -> None:
    assert refusals(WorkerSettings, environment="production") == [
        "WORKER_REDIS_URL: has no password (scheme://user:password@host)",
        "WORKER_BACKEND_TOKEN: is not set (required in production)",
    ]


def test_production_with_strong_values_passes() -> None:
    assert WorkerSettings(**STRONG).environment == "production"
    assert WorkerSettings(**STRONG, llm_provider="openai",
                          openai_api_key=OPENAI_KEY).llm_provider == "openai"


def test_a_public_model_server_needs_a_real_key_over_tls() -> None:
    assert refusals(WorkerSettings, **STRONG, llm_provider="openai") == [
        "WORKER_OPENAI_API_KEY: is not set (required in production)"]
    assert refusals(WorkerSettings, **STRONG, llm_provider="openai",
                    openai_api_key="sk-example-key-000000000") == [
        "WORKER_OPENAI_API_KEY: is a known placeholder"]
    (line,) = refusals(WorkerSettings, **STRONG, llm_provider="openai", openai_api_key=OPENAI_KEY,
                       openai_base_url="http://models.example.net/v1")
    assert line.startswith("WORKER_OPENAI_BASE_URL: calls a public host without TLS")


def test_a_model_server_on_the_own_network_may_need_no_key() -> None:
    settings = WorkerSettings(**STRONG, llm_provider="openai",
                              openai_base_url="http://vllm:8000/v1")
    assert settings.openai_api_key is None


def test_the_builtin_planner_needs_no_key() -> None:
    assert WorkerSettings(**STRONG, openai_base_url="http://models.example.net/v1").llm_provider \
        == "builtin"
