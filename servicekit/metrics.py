"""Prometheus metrics: a registry per service and request metrics by route template."""

from __future__ import annotations

import time

from fastapi import FastAPI, Response
from fastapi.telemetry import TelemetryConfig
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["NO_OPENTELEMETRY", "HttpMetrics"]

#: ``FastAPI(telemetry=...)`` of every app: its OpenTelemetry spans, metrics and
#: logs off. The services export their own metrics here (Prometheus); left on,
#: FastAPI asks OpenTelemetry for its providers on every request and socket
#: (6.4 µs each, about 1 % of a run creation's CPU) to find none configured.
NO_OPENTELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


class _RequestMetrics:
    """Counts and times HTTP requests by route template. A plain ASGI middleware: no
    extra task or body stream per request, as ``BaseHTTPMiddleware`` would add."""

    def __init__(self, app: ASGIApp, *, service: str, requests: Counter,
                 latency: Histogram) -> None:
        self._app = app
        self._service = service
        self._requests = requests
        self._latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_status)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            self._requests.labels(self._service, template, str(status)).inc()
            self._latency.labels(self._service, template).observe(time.perf_counter() - start)


class HttpMetrics:
    """A service's Prometheus registry with its request metrics. ``instrument`` counts
    an app's requests (each listener's app, into the same series); ``expose`` serves
    the registry at ``/metrics`` (on an internal listener only)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self._requests = Counter("http_requests_total", "HTTP requests",
                                 ["service", "route", "status"], registry=self.registry)
        self._latency = Histogram("http_request_duration_seconds", "HTTP request latency",
                                  ["service", "route"], registry=self.registry)

    def instrument(self, app: FastAPI) -> None:
        app.add_middleware(_RequestMetrics, service=self.service, requests=self._requests,
                           latency=self._latency)

    def expose(self, app: FastAPI) -> None:
        registry = self.registry

        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
