"""AuthSettings: nothing to configure in development; production refuses weak values."""

from __future__ import annotations

from typing import Any

import pytest

from auth.config import AuthSettings
from tests.production import PASSWORD, clear_service_variables, refusals

STRONG: dict[str, Any] = {
    "environment": "production",
    "database_url": f"postgresql://auth:{PASSWORD}@postgres:5432/agentchat",
    "redis_url": f"redis://auth:{PASSWORD}@redis:6379/0",
    "cors_origins": ["https://chat.example.org"],
    "forwarded_allow_ips": "10.0.0.2,10.0.0.3",
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_service_variables(monkeypatch)


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_and_test_run_on_the_defaults(environment: str) -> None:
    assert AuthSettings(environment=environment).port == 8001


def test_the_environment_comes_from_auth_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_ENVIRONMENT", "production")
    for name, value in STRONG.items():
        if name != "cors_origins":
            monkeypatch.setenv(f"AUTH_{name.upper()}", value)
    monkeypatch.setenv("AUTH_CORS_ORIGINS", '["https://chat.example.org"]')
    assert AuthSettings().environment == "production"


def test_production_refuses_the_development_defaults() -> None:
    assert refusals(AuthSettings, environment="production") == [
        "AUTH_DATABASE_URL: has no password (scheme://user:password@host)",
        "AUTH_REDIS_URL: has no password (scheme://user:password@host)",
    ]


def test_production_with_strong_values_passes() -> None:
    settings = AuthSettings(**STRONG)
    assert settings.environment == "production"
    assert str(settings.keys_dir) == ".local-stack/keys"  # the default is fine anywhere


def test_production_refuses_placeholder_passwords_and_open_doors() -> None:
    assert refusals(AuthSettings, **{
        **STRONG, "database_url": "postgresql://postgres:change-me-postgres@postgres/agentchat",
        "cors_origins": ["*"], "forwarded_allow_ips": "*"}) == [
        "AUTH_DATABASE_URL: has a known placeholder as its password",
        "AUTH_CORS_ORIGINS: allows any origin ('*')",
        "AUTH_FORWARDED_ALLOW_IPS: trusts X-Forwarded-For from any address ('*'); "
        "name the proxies' addresses",
    ]
