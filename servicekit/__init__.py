"""Plumbing shared by the HTTP services, knowing nothing of users, runs or events.

Problem documents (RFC 9457) and their handlers, readiness checks, Prometheus
metrics, logging and the alembic runner. ``auth`` and ``backend`` both use it;
it imports none of the project's other packages.
"""

from servicekit.health import Check, ReadinessReport, check_all, install_health_routes
from servicekit.logs import configure_logging
from servicekit.metrics import install_metrics
from servicekit.migrations import migrate
from servicekit.problems import (
    ProblemError,
    install_problem_handlers,
    problem,
    problem_responses,
)
from servicekit.text import StorableStr, storable

__all__ = [
    "Check",
    "ProblemError",
    "ReadinessReport",
    "StorableStr",
    "check_all",
    "configure_logging",
    "install_health_routes",
    "install_metrics",
    "install_problem_handlers",
    "migrate",
    "problem",
    "problem_responses",
    "storable",
]
