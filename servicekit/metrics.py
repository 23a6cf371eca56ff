"""Prometheus metrics: a registry per app and request metrics by route template."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

__all__ = ["install_metrics"]


def install_metrics(app: FastAPI, service: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    requests = Counter("http_requests_total", "HTTP requests", ["service", "route", "status"],
                       registry=registry)
    latency = Histogram("http_request_duration_seconds", "HTTP request latency",
                        ["service", "route"], registry=registry)

    @app.middleware("http")
    async def _measure(request: Request,
                       call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        requests.labels(service, template, str(response.status_code)).inc()
        latency.labels(service, template).observe(time.perf_counter() - start)
        return response

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return registry
