"""Production settings in tests: strong values, made afresh each run, and the
problem lines of settings that are refused."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from servicekit.settings import problem_lines

__all__ = ["PASSWORD", "PREFIXES", "TOKEN", "clear_service_variables", "refusals",
           "without_service_variables"]

TOKEN = secrets.token_urlsafe(32)  # 43 characters
PASSWORD = secrets.token_urlsafe(18)  # 24 characters
PREFIXES = ("AUTH_", "BACKEND_", "WORKER_")


def without_service_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the services' settings (a developer's shell may set some)."""
    return {name: value for name, value in environ.items()
            if not name.upper().startswith(PREFIXES)}


def clear_service_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in set(os.environ) - set(without_service_variables(os.environ)):
        monkeypatch.delenv(name)


def refusals(cls: type[BaseSettings], **values: Any) -> list[str]:
    """The problem lines of ``cls(**values)``, which must be refused."""
    with pytest.raises(ValidationError) as caught:
        cls(**values)
    return problem_lines(cls, caught.value)
