"""RFC 9457 problem documents: the one error format of every HTTP answer.

    ProblemError           an answer with a status, a stable ``code`` and a detail
    └── (each service's own errors derive from it)

Library errors of dependencies are converted at the boundary: Redis and Postgres
connection failures become ``503 dependency_unavailable``; anything unexpected
becomes ``500 internal_error`` without a trace or SQL in the body.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

__all__ = ["INVALID_TEXT", "POSTGRES_UNAVAILABLE", "PROBLEM_SCHEMA", "ProblemError",
           "install_problem_handlers", "problem", "problem_responses"]

log = logging.getLogger(__name__)

_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
           422: "Unprocessable Content", 429: "Too Many Requests",
           500: "Internal Server Error", 503: "Service Unavailable"}
_HTTP_CODES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               413: "too_large"}


#: JSON schema of a problem document, for the OpenAPI description of error answers
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"},
        "status": {"type": "integer"}, "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problem documents a route may answer."""
    return {status: {"description": _TITLES.get(status, "Error"),
                     "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}}}
            for status in (*statuses, 422, 503)}


#: asyncpg errors that mean "the database cannot be reached", not "the query is wrong"
POSTGRES_UNAVAILABLE: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError, asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError, asyncpg.CrashShutdownError)


#: text a request carried that PostgreSQL cannot store (NUL, lone surrogates): the
#: caller's mistake (422), wherever it came in (body, path, query, socket frame)
INVALID_TEXT: tuple[type[Exception], ...] = (
    asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError,
    UnicodeEncodeError)


class ProblemError(Exception):
    """An error answered as a problem document."""

    def __init__(self, status: int, code: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    body = {"type": f"about:blank#{code}", "title": _TITLES.get(status, "Error"),
            "status": status, "detail": detail, "code": code, **extra}
    return JSONResponse(body, status_code=status, headers=headers,
                        media_type="application/problem+json")


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return problem(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                  for e in exc.errors()]
        return problem(422, "validation_error", "the request is invalid", errors=errors)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RedisError)
    async def _redis_down(_: Request, exc: RedisError) -> JSONResponse:
        log.warning("redis unavailable: %s", exc)
        return problem(503, "dependency_unavailable", "redis is unavailable; retry later")

    async def _pg_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("postgres unavailable: %s: %s", type(exc).__name__, exc)
        return problem(503, "dependency_unavailable", "postgres is unavailable; retry later")

    for unavailable in POSTGRES_UNAVAILABLE:
        app.add_exception_handler(unavailable, _pg_down)

    async def _invalid_text(_: Request, exc: Exception) -> JSONResponse:
        return problem(422, "invalid_text", "the request carries text that cannot be stored "
                       "(NUL characters or lone surrogates)")

    for invalid in INVALID_TEXT:
        app.add_exception_handler(invalid, _invalid_text)

    @app.exception_handler(OSError)
    async def _os_error(_: Request, exc: OSError) -> JSONResponse:
        log.warning("dependency connection error: %s", exc)
        return problem(503, "dependency_unavailable", "a dependency is unavailable; retry later")

    @app.exception_handler(TimeoutError)
    async def _timeout(_: Request, exc: TimeoutError) -> JSONResponse:
        log.warning("dependency timed out")
        return problem(503, "dependency_unavailable", "a dependency timed out; retry later")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return problem(500, "internal_error", "an unexpected error occurred")
