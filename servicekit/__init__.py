"""Plumbing shared by the HTTP services, knowing nothing of users, runs or events.

Problem documents (RFC 9457) and their handlers, request body limits, readiness checks, Prometheus
metrics, a service's internal app beside its public one, logging and the alembic
runner. ``auth`` and ``backend`` both use it; it imports none of the project's
other packages.

Names are imported on first use: the agent worker needs the Redis client and
the logs, not FastAPI or alembic (most of a second of imports and tens of MB).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from servicekit.bodylimit import BodyLimit, BodyLimits
    from servicekit.health import Check, ReadinessReport, check_all, install_health_routes
    from servicekit.internal import ServiceApps, create_internal_app
    from servicekit.logs import configure_logging
    from servicekit.metrics import NO_OPENTELEMETRY, HttpMetrics
    from servicekit.migrations import migrate
    from servicekit.problems import (
        ProblemError,
        install_problem_handlers,
        problem,
        problem_responses,
    )
    from servicekit.text import StorableStr, storable

_HOMES = {
    "BodyLimit": "bodylimit", "BodyLimits": "bodylimit",
    "Check": "health", "ReadinessReport": "health", "check_all": "health",
    "install_health_routes": "health", "ServiceApps": "internal",
    "create_internal_app": "internal", "configure_logging": "logs",
    "HttpMetrics": "metrics", "NO_OPENTELEMETRY": "metrics", "migrate": "migrations",
    "ProblemError": "problems",
    "install_problem_handlers": "problems", "problem": "problems",
    "problem_responses": "problems", "StorableStr": "text", "storable": "text",
}

__all__ = [
    "NO_OPENTELEMETRY",
    "BodyLimit",
    "BodyLimits",
    "Check",
    "HttpMetrics",
    "ProblemError",
    "ReadinessReport",
    "ServiceApps",
    "StorableStr",
    "check_all",
    "configure_logging",
    "create_internal_app",
    "install_health_routes",
    "install_problem_handlers",
    "migrate",
    "problem",
    "problem_responses",
    "storable",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'servicekit' has no attribute {name!r}")
    return getattr(importlib.import_module(f"servicekit.{home}"), name)
