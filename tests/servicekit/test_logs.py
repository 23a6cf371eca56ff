"""The log handler of configure_logging: no URL password, bearer token or request
query string reaches stderr, tracebacks included; a real uvicorn's access log too."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sys
from collections.abc import Callable, Iterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from e2e.stack import free_port
from servicekit.logs import RedactingHandler, configure_logging

SECRET = "hunter2-s3cr3t-pw"
DSN = f"postgresql://app:{SECRET}@db:5432/agentchat"


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], str]]:
    """configure_logging writing to a buffer as its stderr; root logger and excepthook
    restored afterwards. Yields a function returning what was logged so far."""
    root = logging.getLogger()
    handlers, level, hook = root.handlers[:], root.level, sys.excepthook
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    configure_logging("svc", "info")
    try:
        yield stderr.getvalue
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.excepthook = hook


def test_a_password_in_a_message_is_masked(logs: Callable[[], str]) -> None:
    logging.getLogger("backend.app").info("clickhouse ready at %s", DSN)
    out = logs()
    assert "postgresql://app:***@db:5432/agentchat" in out
    assert SECRET not in out
    assert " INFO svc backend.app: clickhouse ready at " in out  # the format is kept


def test_a_traceback_is_redacted(logs: Callable[[], str]) -> None:
    try:
        raise ConnectionError(f"cannot connect to {DSN}")
    except ConnectionError:
        logging.getLogger("servicekit.startup").exception("postgres migrations failed")
    out = logs()
    assert "Traceback" in out
    assert "ConnectionError: cannot connect to postgresql://app:***@db" in out
    assert SECRET not in out


def test_an_uncaught_exception_is_logged_redacted(logs: Callable[[], str]) -> None:
    try:
        raise RuntimeError(f"gave up on {DSN}")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    out = logs()
    assert "CRITICAL svc uncaught: uncaught exception" in out and "Traceback" in out
    assert SECRET not in out


def test_a_bearer_token_is_masked(logs: Callable[[], str]) -> None:
    logging.getLogger("x").warning("headers: %s", {"authorization": f"Bearer {SECRET}x"})
    out = logs()
    assert "Bearer ***" in out and SECRET not in out


def test_a_failed_record_is_reported_without_its_arguments() -> None:
    log = logging.getLogger("tests.failing")
    log.propagate = False  # pytest's own handlers on the root would raise instead
    log.handlers[:] = [RedactingHandler(io.StringIO())]
    report = io.StringIO()
    try:
        with contextlib.redirect_stderr(report):  # where logging reports its own failures
            log.warning("%s and %s", DSN)  # one argument short
    finally:
        log.handlers.clear()
        log.propagate = True
    out = report.getvalue()
    assert "--- logging error (TypeError: " in out and "'%s and %s'" in out
    assert SECRET not in out


def test_the_access_log_loses_query_strings(logs: Callable[[], str]) -> None:
    access = logging.getLogger("uvicorn.access")
    record = access.makeRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET",
                                "/internal/users/u/messages?q=secret%20text", "1.1", 200), None)
    access.handle(record)
    out = logs()
    assert '127.0.0.1:5000 - "GET /internal/users/u/messages HTTP/1.1" 200' in out
    assert "secret" not in out
    # the record itself is untouched, for any other handler
    assert record.args == ("127.0.0.1:5000", "GET", "/internal/users/u/messages?q=secret%20text",
                           "1.1", 200)


def test_websocket_lines_lose_query_strings(logs: Callable[[], str]) -> None:
    logging.getLogger("uvicorn.error").info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000",
                                           "/ws?ticket=secret-ticket")
    out = logs()
    assert '"WebSocket /ws" [accepted]' in out and "secret" not in out


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.servers  # a real uvicorn
async def test_a_real_uvicorn_access_log_has_no_query(logs: Callable[[], str]) -> None:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_app, host="127.0.0.1", port=port, log_level="info",
                                           log_config=None, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(1000):
            if server.started:
                break
            await asyncio.sleep(0.01)
        # a bare request: an HTTP client would log the URL itself
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /internal/users/u/messages?q=secret%20text HTTP/1.1\r\n"
                     b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 200 ")
        writer.close()
    finally:
        server.should_exit = True
        await serving
    out = logs()
    assert '"GET /internal/users/u/messages HTTP/1.1" 200' in out
    assert "secret" not in out
