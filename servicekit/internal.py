"""A service's internal app: what its internal listener serves, beside the public app.

The public app serves what clients need. The internal one, on an address that only
the service's own network reaches, serves ``/metrics``, the detailed ``/readyz``
and ``/healthz``, and whatever the service adds (the backend: the API its agent
workers call). The two share one ``app.state``, as the process runs one lifespan
for both (:func:`servicekit.server.serve`): a handler on either finds the same
pools, clients and tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from servicekit.bodylimit import BodyLimit, BodyLimits
from servicekit.health import Check, install_health_routes
from servicekit.metrics import NO_OPENTELEMETRY, HttpMetrics
from servicekit.problems import install_problem_handlers

__all__ = ["ServiceApps", "create_internal_app"]


@dataclass(frozen=True)
class ServiceApps:
    """A service's two apps, one per listener."""

    public: FastAPI
    internal: FastAPI


def create_internal_app(
    public: FastAPI,
    *,
    metrics: HttpMetrics,
    checks: Callable[[], Mapping[str, Check]],
    timeout: float,
    body_limits: BodyLimits,
    extra: Callable[[], Mapping[str, Any]] | None = None,
) -> FastAPI:
    """The internal app beside ``public``, sharing its state; no OpenAPI document.
    Request bodies over ``body_limits`` are refused before anything reads them."""
    app = FastAPI(title=f"{public.title} (internal)", version=public.version,
                  openapi_url=None, docs_url=None, redoc_url=None,
                  telemetry=NO_OPENTELEMETRY)
    app.state = public.state
    install_problem_handlers(app)
    app.add_middleware(BodyLimit, limits=body_limits)  # inside the metrics only
    metrics.instrument(app)
    metrics.expose(app)
    install_health_routes(app, checks, timeout=timeout, extra=extra, detailed=True)
    return app
