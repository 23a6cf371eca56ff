"""``/healthz`` (the process answers) and ``/readyz`` (every dependency answers).

``/readyz`` has two bodies. The detailed one, for an internal listener, names each
dependency with its error and adds what the service reports of itself; the public
one says only ``ok`` (200) or ``unavailable`` (503), so the public port tells
nobody what a service depends on or what is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

__all__ = ["Check", "ReadinessReport", "check_all", "install_health_routes"]

#: A named probe of one dependency: returns normally when it answers.
Check = Callable[[], Awaitable[Any]]


@dataclass
class ReadinessReport:
    checks: dict[str, dict[str, str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(c["status"] == "ok" for c in self.checks.values())

    def body(self) -> dict[str, Any]:
        """The detailed body: each check, and the service's extra figures."""
        return {"status": "ok" if self.ready else "error", "checks": self.checks, **self.extra}

    def summary(self) -> dict[str, str]:
        """The public body: ready or not, nothing more."""
        return {"status": "ok" if self.ready else "unavailable"}


async def check_all(checks: Mapping[str, Check], *, timeout: float) -> ReadinessReport:
    async def one(check: Check) -> dict[str, str]:
        try:
            await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            return {"status": "error", "error": f"no answer within {timeout}s"}
        except Exception as exc:
            return {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
        return {"status": "ok"}

    names = list(checks)
    results = await asyncio.gather(*(one(checks[n]) for n in names))
    return ReadinessReport(checks=dict(zip(names, results, strict=True)))


def install_health_routes(
    app: FastAPI,
    checks: Callable[[], Mapping[str, Check]],
    *,
    timeout: float,
    extra: Callable[[], Mapping[str, Any]] | None = None,
    detailed: bool = False,
) -> None:
    """``/healthz`` and ``/readyz`` on ``app``; ``detailed`` for an internal listener
    (``extra`` is only shown there)."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        report = await check_all(checks(), timeout=timeout)
        status = 200 if report.ready else 503
        if not detailed:
            return JSONResponse(report.summary(), status_code=status)
        if extra is not None:
            report.extra.update(extra())
        return JSONResponse(report.body(), status_code=status)
