"""The production checks one by one, the settings base class that runs them, and
the loader that reports them by variable name and never by value."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping

import pytest
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from servicekit.settings import (
    ServiceSettings,
    SettingsProblems,
    api_key_problems,
    clickhouse_url_problems,
    forwarded_ips_problems,
    is_placeholder,
    is_private_host,
    load_settings,
    model_url_problems,
    origin_problems,
    problem_lines,
    secret_problems,
    url_password_problems,
    variable,
)

TOKEN = secrets.token_urlsafe(32)  # 43 characters
PASSWORD = secrets.token_urlsafe(18)  # 24 characters


@pytest.mark.parametrize("value", [
    "change-me-internal-token", "CHANGEME", "please_change_me_now", "dev-insecure-internal-token",
    "placeholder", "my-example-secret", "password", "Secret", "postgres", "redis", "admin",
    " admin ",
])
def test_placeholders_are_known(value: str) -> None:
    assert is_placeholder(value)


@pytest.mark.parametrize("value", [TOKEN, PASSWORD, "correct horse battery staple"])
def test_real_values_are_no_placeholders(value: str) -> None:
    assert not is_placeholder(value)


@pytest.mark.parametrize(("value", "problems"), [
    (None, ["is not set (required in production)"]),
    ("", ["is empty (required in production)"]),
    ("   ", ["is empty (required in production)"]),
    ("change-me-internal-token", ["is a known placeholder", "is shorter than 32 characters"]),
    ("dev-insecure-internal-token-0123456789", ["is a known placeholder"]),
    ("x" * 31, ["is shorter than 32 characters"]),
    ("x" * 32, []),
    (TOKEN, []),
])
def test_a_token_must_be_set_real_and_long(value: str | None, problems: list[str]) -> None:
    assert secret_problems(value) == problems


def test_the_minimum_length_of_a_secret_is_a_parameter() -> None:
    assert secret_problems("x" * 20, minimum=20) == []
    assert secret_problems("x" * 19, minimum=20) == ["is shorter than 20 characters"]


@pytest.mark.parametrize("url", [
    "postgresql://postgres@127.0.0.1:5432/agentchat",  # a user, no password
    "postgresql://postgres:@db:5432/agentchat",  # an empty one
    "redis://127.0.0.1:6379/0",
    "redis://only-a-username-here@redis:6379/0",
])
def test_a_data_store_url_without_password_is_refused(url: str) -> None:
    assert url_password_problems(url) == ["has no password (scheme://user:password@host)"]


@pytest.mark.parametrize(("url", "problems"), [
    ("postgresql://postgres:change-me-postgres@db/agentchat",
     ["has a known placeholder as its password"]),
    ("redis://:redis@redis:6379/0",
     ["has a known placeholder as its password", "has a password shorter than 16 characters"]),
    ("redis://default:short-pw@redis:6379/0", ["has a password shorter than 16 characters"]),
    # percent-encoded: the password's own length counts (%2F is one character)
    ("postgresql://app:%2F%2F%2F%2F%2F%2F%2F%2F@db/x",
     ["has a password shorter than 16 characters"]),
    ("http://[::1:8123", ["is not a valid URL"]),
])
def test_a_weak_url_password_is_refused(url: str, problems: list[str]) -> None:
    assert url_password_problems(url) == problems


@pytest.mark.parametrize("url", [
    f"postgresql://app:{PASSWORD}@db:5432/agentchat",
    f"redis://:{PASSWORD}@redis:6379/0",
    f"rediss://worker:{PASSWORD}@redis:6380/0",  # a Redis ACL user, TLS
    f"https://agentchat:{PASSWORD}@clickhouse:8443",
])
def test_a_url_with_a_strong_password_passes(url: str) -> None:
    assert url_password_problems(url) == []
    assert clickhouse_url_problems(url) == []


def test_embedded_clickhouse_is_refused_with_a_reason() -> None:
    (problem,) = clickhouse_url_problems("chdb:///.local-stack/clickhouse")
    assert problem.startswith("chdb:// (embedded ClickHouse) is for development only")


def test_a_clickhouse_server_needs_a_password() -> None:
    assert clickhouse_url_problems("http://clickhouse:8123") == [
        "has no password (scheme://user:password@host)"]


@pytest.mark.parametrize(("origins", "problems"), [
    (["*"], ["allows any origin ('*')"]),
    (["https://chat.example.org", "https://*.example.org"],
     ["allows any origin ('https://*.example.org')"]),
    (["https://chat.example.org", ""], ["has an empty entry"]),
    (["", " "], ["has an empty entry"]),
    (["null"], ["allows the origin 'null' (sandboxed frames, local files)"]),
    (["https://chat.example.org", "http://localhost:8000"], []),
    ([], []),
])
def test_origin_lists_name_each_origin(origins: list[str], problems: list[str]) -> None:
    assert origin_problems(origins) == problems


@pytest.mark.parametrize(("value", "refused"), [
    ("*", True), ("127.0.0.1, *", True), ("127.0.0.1", False), ("10.0.0.5,10.0.0.6", False),
    ("", False),
])
def test_forwarded_headers_are_trusted_from_named_proxies_only(value: str, refused: bool) -> None:
    assert bool(forwarded_ips_problems(value)) is refused


@pytest.mark.parametrize(("host", "private"), [
    ("localhost", True), ("127.0.0.1", True), ("::1", True), ("[::1]", True),
    ("10.1.2.3", True), ("192.168.1.20", True), ("172.16.0.9", True), ("169.254.1.1", True),
    ("vllm", True), ("ollama", True), ("vllm.default.svc.cluster.local", True),
    ("models.internal", True), ("gpu.localhost", True),
    ("api.openai.com", False), ("8.8.8.8", False), ("", False),
])
def test_private_hosts(host: str, private: bool) -> None:
    assert is_private_host(host) is private


def test_a_public_model_server_needs_a_real_key() -> None:
    url = "https://api.openai.com/v1"
    assert api_key_problems(url, None) == ["is not set (required in production)"]
    assert api_key_problems(url, "sk-change-me") == ["is a known placeholder",
                                                     "is shorter than 20 characters"]
    assert api_key_problems(url, "sk-" + TOKEN) == []


@pytest.mark.parametrize("url", ["http://localhost:11434/v1", "http://vllm:8000/v1",
                                 "http://10.0.0.7:8080/v1"])
def test_a_model_server_on_the_own_network_may_need_no_key(url: str) -> None:
    assert api_key_problems(url, None) == []
    assert model_url_problems(url) == []


def test_a_public_model_server_is_called_over_tls() -> None:
    assert model_url_problems("https://api.openai.com/v1") == []
    (problem,) = model_url_problems("http://api.openai.com/v1")
    assert problem.startswith("calls a public host without TLS")


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_")

    token: SecretStr | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    retries: int = 3

    def production_problems(self) -> Mapping[str, Iterable[str]]:
        token = self.token.get_secret_value() if self.token else None
        return {"token": secret_problems(token), "redis_url": url_password_problems(self.redis_url)}


@pytest.fixture(autouse=True)
def _no_demo_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DEMO_ENVIRONMENT", "DEMO_TOKEN", "DEMO_REDIS_URL", "DEMO_RETRIES"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_and_test_check_nothing(environment: str) -> None:
    assert DemoSettings(environment=environment, token=SecretStr("change-me")).retries == 3


def test_production_lists_every_problem_by_variable() -> None:
    with pytest.raises(ValidationError) as caught:
        DemoSettings(environment="production", token=SecretStr("change-me-please"),
                     redis_url="redis://:hunter2@redis:6379/0")
    problems = caught.value.errors()[0]["ctx"]["error"]
    assert isinstance(problems, SettingsProblems)
    assert problems.lines == [
        "DEMO_TOKEN: is a known placeholder",
        "DEMO_TOKEN: is shorter than 32 characters",
        "DEMO_REDIS_URL: has a password shorter than 16 characters",
    ]
    # pydantic's own text would carry the input: the settings hide it
    assert "hunter2" not in str(caught.value) and "change-me-please" not in str(caught.value)


def test_production_with_strong_values_passes() -> None:
    settings = DemoSettings(environment="production", token=SecretStr(TOKEN),
                            redis_url=f"redis://:{PASSWORD}@redis:6379/0")
    assert settings.environment == "production"


def test_variable_names_follow_the_prefix() -> None:
    assert variable(DemoSettings, "redis_url") == "DEMO_REDIS_URL"


def test_other_errors_name_their_variable_and_not_their_value() -> None:
    with pytest.raises(ValidationError) as caught:
        DemoSettings(environment="prod", retries="many-secret-retries")
    lines = problem_lines(DemoSettings, caught.value)
    assert [line.partition(":")[0] for line in lines] == ["DEMO_ENVIRONMENT", "DEMO_RETRIES"]
    assert "many-secret-retries" not in "\n".join(lines)


def test_the_loader_returns_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_RETRIES", "5")
    assert load_settings(DemoSettings).retries == 5


def test_the_loader_refuses_to_start(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "production")
    monkeypatch.setenv("DEMO_TOKEN", "dev-insecure-internal-token")
    monkeypatch.setenv("DEMO_REDIS_URL", f"redis://:{PASSWORD}@redis:6379/0")
    with pytest.raises(SystemExit) as exited:
        load_settings(DemoSettings)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "demo: refusing to start: DEMO_TOKEN: is a known placeholder",
        "demo: refusing to start: DEMO_TOKEN: is shorter than 32 characters",
    ]


def test_a_command_using_some_settings_is_checked_on_those_alone(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "production")
    monkeypatch.setenv("DEMO_TOKEN", "dev-insecure-internal-token")
    monkeypatch.setenv("DEMO_REDIS_URL", f"redis://:{PASSWORD}@redis:6379/0")
    assert load_settings(DemoSettings, only={"redis_url"}).retries == 3
    monkeypatch.setenv("DEMO_REDIS_URL", "redis://redis:6379/0")
    with pytest.raises(SystemExit):
        load_settings(DemoSettings, only={"redis_url"})
    assert capsys.readouterr().err.splitlines() == [
        "demo: refusing to start: DEMO_REDIS_URL: has no password (scheme://user:password@host)"]
    with pytest.raises(SystemExit):  # the next load checks everything again
        load_settings(DemoSettings)


def test_the_loader_names_the_service_it_is_given(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DEMO_RETRIES", "not-a-number")
    with pytest.raises(SystemExit):
        load_settings(DemoSettings, service="demo-1")
    err = capsys.readouterr().err
    assert err.startswith(
        "demo-1: refusing to start: DEMO_RETRIES: Input should be a valid integer")
    assert "not-a-number" not in err


class ListSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_")

    origins: list[str] = Field(default=[])


def test_the_loader_reports_a_value_it_cannot_parse_without_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DEMO_ORIGINS", '["https://secret-origin.example.org"')  # broken JSON
    with pytest.raises(SystemExit) as exited:
        load_settings(ListSettings)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("demo: refusing to start: ") and '"origins"' in err
    assert "secret-origin" not in err
