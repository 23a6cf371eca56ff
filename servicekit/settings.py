"""Production refuses weak settings: the checks, the settings base class that runs
them, and the loader that reports them without ever printing a value.

A service's settings derive from :class:`ServiceSettings` and name their
problems in :meth:`ServiceSettings.production_problems` (field → problems), built
from the checks below. With ``environment="production"``, any problem fails
validation with :class:`SettingsProblems`, one line per problem naming the
environment variable (``BACKEND_INTERNAL_TOKEN: is a known placeholder``).
Development and test run on the defaults and check nothing.

:func:`load_settings` builds the settings at a service's start; on any error it
prints ``<service>: refusing to start: <line>`` to stderr per problem and exits
with status 2. pydantic's own error text would include the input values (the
secrets), so it is never printed, and the settings hide input in errors anyway.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Collection, Iterable, Mapping
from contextvars import ContextVar
from typing import Literal, Self, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

__all__ = [
    "API_KEY_MINIMUM",
    "COMMON_SECRETS",
    "PLACEHOLDER_MARKERS",
    "PRIVATE_SUFFIXES",
    "TOKEN_MINIMUM",
    "URL_PASSWORD_MINIMUM",
    "ServiceSettings",
    "SettingsProblems",
    "api_key_problems",
    "clickhouse_url_problems",
    "forwarded_ips_problems",
    "is_placeholder",
    "is_private_host",
    "load_settings",
    "model_url_problems",
    "origin_problems",
    "problem_lines",
    "secret_problems",
    "url_password_problems",
    "variable",
]

#: tokens this project's services share (the internal API's token)
TOKEN_MINIMUM = 32
#: passwords inside data-store URLs
URL_PASSWORD_MINIMUM = 16
#: keys a model provider issues: their format is the provider's, so a lower bound
#: that every real key passes and a stand-in like ``sk-xxx`` does not
API_KEY_MINIMUM = 20

#: a value containing one of these is a stand-in, whatever else it holds
#: (``dev-insecure``: the marker of the compose file's development-only defaults)
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me", "dev-insecure", "placeholder",
                       "example")
#: values that are the first guess of anyone trying
COMMON_SECRETS = frozenset({
    "password", "passwd", "secret", "postgres", "redis", "admin", "root", "default", "guest",
    "clickhouse", "agentchat", "test", "token", "letmein", "qwerty", "123456", "12345678"})

#: name suffixes reserved for private networks (RFC 6761, RFC 6762, RFC 8375, ICANN)
PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")

S = TypeVar("S", bound=BaseSettings)


def is_placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    return lowered in COMMON_SECRETS or any(marker in lowered for marker in PLACEHOLDER_MARKERS)


def secret_problems(value: str | None, *, minimum: int = TOKEN_MINIMUM) -> list[str]:
    """A secret must be set, not a placeholder, and at least ``minimum`` characters."""
    if value is None:
        return ["is not set (required in production)"]
    if not value.strip():
        return ["is empty (required in production)"]
    problems = []
    if is_placeholder(value):
        problems.append("is a known placeholder")
    if len(value) < minimum:
        problems.append(f"is shorter than {minimum} characters")
    return problems


def url_password_problems(url: str, *, minimum: int = URL_PASSWORD_MINIMUM) -> list[str]:
    """A data store's URL must carry a password in its user info
    (``scheme://[user]:password@host``), not a placeholder, and long enough."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return ["is not a valid URL"]
    if not password:
        return ["has no password (scheme://user:password@host)"]
    password = unquote(password)
    problems = []
    if is_placeholder(password):
        problems.append("has a known placeholder as its password")
    if len(password) < minimum:
        problems.append(f"has a password shorter than {minimum} characters")
    return problems


def clickhouse_url_problems(url: str) -> list[str]:
    """Production needs a ClickHouse server; ``chdb://`` is the embedded one."""
    if url.partition(":")[0].lower() == "chdb":
        return ["chdb:// (embedded ClickHouse) is for development only; production needs a "
                "ClickHouse server (http(s)://user:password@host:8123)"]
    return url_password_problems(url)


def origin_problems(origins: Iterable[str]) -> list[str]:
    """An allow-list of origins must name each origin: no ``*``, no empty entry, no
    ``null`` (the origin of sandboxed frames and local files, which anyone can use)."""
    problems = []
    for origin in origins:
        entry = origin.strip()
        if not entry:
            problems.append("has an empty entry")
        elif "*" in entry:
            problems.append(f"allows any origin ({entry!r})")
        elif entry.lower() == "null":
            problems.append("allows the origin 'null' (sandboxed frames, local files)")
    return list(dict.fromkeys(problems))


def forwarded_ips_problems(value: str) -> list[str]:
    """Trusting ``X-Forwarded-For`` from anyone lets any client choose its address."""
    if "*" in (entry.strip() for entry in value.split(",")):
        return ["trusts X-Forwarded-For from any address ('*'); name the proxies' addresses"]
    return []


def is_private_host(host: str) -> bool:
    """A host on the deployment's own network: loopback, a private or link-local
    address, a single-label name (a compose service like ``vllm``), or a name under
    a suffix reserved for private use (``.localhost``, ``.local`` as in Kubernetes'
    ``svc.cluster.local``, ``.internal``, ``.home.arpa``)."""
    host = host.strip("[]").lower().rstrip(".")
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host or host.endswith(PRIVATE_SUFFIXES)
    return address.is_loopback or address.is_private or address.is_link_local


def api_key_problems(base_url: str, key: str | None) -> list[str]:
    """A model server's key: required, and real, unless the server is on the
    deployment's own network (:func:`is_private_host`), where it may need none."""
    if is_private_host(_host(base_url)):
        return []
    return secret_problems(key, minimum=API_KEY_MINIMUM)


def model_url_problems(base_url: str) -> list[str]:
    """A model server on a public host is called over https: the key travels with
    every request."""
    try:
        scheme = urlsplit(base_url).scheme.lower()
    except ValueError:
        return ["is not a valid URL"]
    if scheme != "https" and not is_private_host(_host(base_url)):
        return ["calls a public host without TLS (the API key would travel in clear); "
                "use https"]
    return []


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


class SettingsProblems(ValueError):
    """The problems of a settings object, one line each: ``VARIABLE: problem``."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = list(lines)
        super().__init__("; ".join(self.lines))


#: the fields a command uses, when it uses only some (a migration: the database URL)
_ONLY: ContextVar[frozenset[str] | None] = ContextVar("settings_in_use", default=None)


class ServiceSettings(BaseSettings):
    """Settings of a service: in production, :meth:`production_problems` must find
    none. Subclasses set ``env_prefix`` (it names the variables in the problems)."""

    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True)

    environment: Literal["development", "test", "production"] = "development"

    def production_problems(self) -> Mapping[str, Iterable[str]]:
        """Field name → the problems of its value, checked in production only."""
        return {}

    @model_validator(mode="after")
    def _refuse_weak_settings_in_production(self) -> Self:
        if self.environment == "production":
            only = _ONLY.get()
            lines = [f"{variable(type(self), field)}: {problem}"
                     for field, problems in self.production_problems().items()
                     if only is None or field in only
                     for problem in problems]
            if lines:
                raise SettingsProblems(lines)
        return self


def variable(cls: type[BaseSettings], field: str) -> str:
    """The environment variable of a field (``BACKEND_`` + ``internal_token``)."""
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def problem_lines(cls: type[BaseSettings], error: ValidationError | SettingsError) -> list[str]:
    """What is wrong, one line per problem, naming variables and never a value."""
    if isinstance(error, SettingsError):  # names the field and the source, not the value
        return [str(error)]
    lines = []
    for detail in error.errors(include_url=False, include_input=False):
        cause = detail.get("ctx", {}).get("error")
        if isinstance(cause, SettingsProblems):
            lines.extend(cause.lines)
        elif detail["loc"]:
            lines.append(f"{variable(cls, str(detail['loc'][0]))}: {detail['msg']}")
        else:
            lines.append(f"{cls.__name__}: {detail['msg']}")
    return lines


def load_settings(cls: type[S], *, service: str | None = None,
                  only: Collection[str] | None = None) -> S:
    """``cls()`` from the environment; if invalid, the problems on stderr and exit 2.

    ``service`` names the service in the messages (default: the variables' prefix,
    ``BACKEND_`` → ``backend``). ``only``: the fields the command uses; production
    checks those alone (a one-shot migration needs the database URL, not the
    service's other secrets)."""
    token = _ONLY.set(None if only is None else frozenset(only))
    try:
        return cls()
    except (ValidationError, SettingsError) as exc:
        name = service or str(cls.model_config.get("env_prefix", "")).rstrip("_").lower()
        for line in problem_lines(cls, exc):
            print(f"{name}: refusing to start: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        _ONLY.reset(token)
