"""BackendSettings: nothing to configure in development; production refuses weak values."""

from __future__ import annotations

from typing import Any

import pytest

from backend.config import BackendSettings
from tests.production import PASSWORD, TOKEN, clear_service_variables, refusals

STRONG: dict[str, Any] = {
    "environment": "production",
    "database_url": f"postgresql://app:{PASSWORD}@postgres:5432/agentchat",
    "redis_url": f"rediss://backend:{PASSWORD}@redis:6380/0",
    "clickhouse_url": f"http://agentchat:{PASSWORD}@clickhouse:8123",
    "ws_allowed_origins": ["https://chat.example.org"],
    "internal_token": TOKEN,
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_service_variables(monkeypatch)


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_and_test_run_on_the_defaults(environment: str) -> None:
    assert BackendSettings(environment=environment).internal_token is None


def test_production_refuses_the_development_defaults() -> None:
    lines = refusals(BackendSettings, environment="production")
    assert [line.partition(":")[0] for line in lines] == [
        "BACKEND_DATABASE_URL", "BACKEND_REDIS_URL", "BACKEND_INTERNAL_TOKEN",
        "BACKEND_CLICKHOUSE_URL"]
    assert "BACKEND_INTERNAL_TOKEN: is not set (required in production)" in lines
    assert lines[-1].startswith("BACKEND_CLICKHOUSE_URL: chdb:// (embedded ClickHouse) is for "
                                "development only")


def test_production_with_strong_values_passes() -> None:
    assert BackendSettings(**STRONG).environment == "production"


def test_a_replica_that_does_not_ingest_needs_no_clickhouse() -> None:
    values = {**STRONG, "clickhouse_url": "chdb:///.local-stack/clickhouse"}
    assert BackendSettings(**values, analytics_ingest=False).clickhouse_url.startswith("chdb")
    assert len(refusals(BackendSettings, **values)) == 1


def test_production_refuses_a_placeholder_token_and_any_origin() -> None:
    assert refusals(BackendSettings, **{
        **STRONG, "internal_token": "dev-insecure-internal-token",
        "ws_allowed_origins": ["https://chat.example.org", "*"]}) == [
        "BACKEND_WS_ALLOWED_ORIGINS: allows any origin ('*')",
        "BACKEND_INTERNAL_TOKEN: is a known placeholder",
        "BACKEND_INTERNAL_TOKEN: is shorter than 32 characters",
    ]
