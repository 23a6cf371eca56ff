"""A ClickHouse HTTP interface on chDB: a test stand-in for the offline compose stack.

The compose stack is proven on a Docker engine without a registry, and Debian has
no ClickHouse server package; this server takes the ``clickhouse`` service's place
there. It is not a ClickHouse replacement: it speaks the part of the HTTP interface
that clickhouse-connect (the backend's client) uses, over one persistent chDB
session (embedded ClickHouse), one statement at a time.

What it implements:

* ``GET /ping`` and ``GET /`` without a query: ``Ok.``, without credentials, as
  ClickHouse answers them (the compose healthcheck calls ``/ping`` that way).
* Statements on ``/`` by GET or POST: the SQL from the ``query`` parameter, the
  body, or both (the parameter first, then a newline, then the body), or from
  ``multipart/form-data`` fields (clickhouse-connect sends long bound parameters
  so); the ``database``, ``default_format`` and ``query_id`` parameters; bound
  parameters ``param_<name>`` (chDB binds them itself, as the server would);
  settings as parameters: those chDB knows are applied with SET, those of the HTTP
  transport and unknown ones are ignored. chDB's output is returned as it is.
* ``INSERT INTO t (cols) FORMAT F`` followed by data (clickhouse-connect: Native),
  the body plain or chunked, compressed or not (``Content-Encoding`` lz4, zstd,
  gzip, deflate, br, xz, bz2: chDB decompresses it with ClickHouse's own code).
* Response headers ``X-ClickHouse-Query-Id``, ``-Summary``, ``-Format``,
  ``-Timezone``; failures as ``Code: N. DB::Exception: ...`` with
  ``X-ClickHouse-Exception-Code`` and the HTTP status ClickHouse gives that code.
* Credentials (HTTP basic, ``X-ClickHouse-User``/``X-ClickHouse-Key``, or the
  ``user``/``password`` parameters) checked against one user; anything else is
  ``516 AUTHENTICATION_FAILED``.

What it does not: responses are never compressed (identity is always a valid
answer to Accept-Encoding); ClickHouse's native compression (``compress``,
``decompress``) and external data answer NOT_IMPLEMENTED; there are no sessions
(``session_id`` is ignored): a statement's own SET or USE lasts until the next
request, as without a session, and temporary tables are everybody's; GET does not
imply readonly; an empty result in Native format is empty, without the header
block ClickHouse writes (chDB writes none: clickhouse-connect's own embedded chDB
client sees the same).
"""

# How it runs: ``python3 server.py --port 8123 --path /var/lib/clickhouse``, with
# CLICKHOUSE_USER and CLICKHOUSE_PASSWORD (the one user every request must present;
# "default" and an empty password when unset) and CLICKHOUSE_DB (a database created
# at start), as the official image reads them. It needs Python 3.11+ and the chdb
# package only. It logs one line per request to stderr and stops on SIGTERM or
# SIGINT, closing the chDB session (exit status 0). Only one process may open a
# data path: a second one on it fails to start.

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hmac
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import chdb

__all__ = ["Credentials", "Engine", "QueryError", "Reply", "Service", "StandinServer", "main"]

log = logging.getLogger("clickhouse-standin")

#: ClickHouse's error codes the server itself raises
AUTHENTICATION_FAILED = 516
NOT_IMPLEMENTED = 48
SYNTAX_ERROR = 62
UNKNOWN_FORMAT = 73
BAD_ARGUMENTS = 36
ABORTED = 236
STD_EXCEPTION = 1001

# The HTTP status ClickHouse answers an error with, by the error's name (from
# exceptionCodeToHTTPStatus); every other error is a 500. clickhouse-connect
# retries read-only statements on 503.
_STATUS_BY_ERROR: dict[str, int] = {
    **dict.fromkeys(("REQUIRED_PASSWORD",), 401),
    **dict.fromkeys(("UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED",
                     "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"), 403),
    **dict.fromkeys((
        "CANNOT_PARSE_TEXT", "CANNOT_PARSE_ESCAPE_SEQUENCE", "CANNOT_PARSE_QUOTED_STRING",
        "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
        "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID", "CANNOT_PARSE_IPV4",
        "CANNOT_PARSE_IPV6", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN", "UNKNOWN_ELEMENT_IN_AST",
        "TOO_DEEP_AST", "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR",
        "INCORRECT_DATA", "TYPE_MISMATCH", "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
        "BAD_ARGUMENTS", "ILLEGAL_TYPE_OF_ARGUMENT", "NUMBER_OF_ARGUMENTS_DOESNT_MATCH",
        "UNKNOWN_QUERY_PARAMETER", "BAD_QUERY_PARAMETER"), 400),
    **dict.fromkeys((
        "UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE",
        "UNKNOWN_STORAGE", "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_AGGREGATE_FUNCTION",
        "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY"), 404),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    **dict.fromkeys(("SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "ABORTED"), 503),
    "TIMEOUT_EXCEEDED": 408,
}

# Request parameters that are not settings: the HTTP interface's own, and those
# clickhouse-connect sends that only a real server's HTTP layer reads. ``readonly``
# too: set on the one shared session, it could never be unset.
_NOT_SETTINGS = frozenset({
    "query", "database", "default_format", "query_id", "user", "password", "quota_key",
    "session_id", "session_timeout", "session_check", "close_session", "stacktrace",
    "buffer_size", "wait_end_of_query", "compress", "decompress", "client_protocol_version",
    "role", "enable_http_compression", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "http_zlib_compression_level", "readonly",
})

# Content-Encoding -> the name chDB's file() takes for that compression
_COMPRESSION = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate", "br": "br",
                "xz": "xz", "zstd": "zstd", "lz4": "lz4", "bz2": "bz2"}

# Names chDB's Python query() reads as its own result types, not as formats
_NOT_FORMATS = frozenset({"dataframe", "arrowtable", "datastore"})

# The statements that answer a result set: ClickHouse names their format in a
# header even when they return no rows (clickhouse-connect's command() tells ""
# from "no result" by it).
_RESULT_STATEMENTS = frozenset({b"SELECT", b"WITH", b"SHOW", b"DESC", b"DESCRIBE",
                                b"EXISTS", b"EXPLAIN", b"CHECK"})

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ERROR_CODE = re.compile(r"Code: (\d+)\. ")
_ERROR_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")
# An insert whose data follows the statement: its text up to the format's name
_INSERT_DATA = re.compile(rb"\A\s*(INSERT\s+INTO\s.+?)\sFORMAT\s+(\w+)", re.I | re.S)
_BACKQUOTED = re.compile(rb"`(?:[^`\\]|\\.)*`")
_SELECTS = re.compile(rb"\b(?:SELECT|VALUES)\b", re.I)
_TRAILING_FORMAT = re.compile(rb"\bFORMAT\s+(\w+)\s*;?\s*\Z", re.I)
_LEADING_NOISE = re.compile(rb"\A(?:\s+|\(|--[^\n]*\n|/\*.*?\*/)*", re.S)
_FIRST_WORD = re.compile(rb"\w+")
_SET_NAMES = re.compile(rb"(\w+)\s*=")


class QueryError(Exception):
    """A failure answered as ClickHouse answers one: code, message, HTTP status."""

    def __init__(self, code: int, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        names = _ERROR_NAME.findall(message)
        self.status = status or (_STATUS_BY_ERROR.get(names[-1], 500) if names else 500)

    @classmethod
    def from_engine(cls, exc: Exception) -> QueryError:
        """chDB's exception text holds ClickHouse's own ``Code: N. DB::Exception: ...``
        (after a prefix of chDB's, for a streaming insert)."""
        text = str(exc)
        match = _ERROR_CODE.search(text)
        if not match:
            return cls(STD_EXCEPTION, f"DB::Exception: {text.strip()} (STD_EXCEPTION)")
        body = text[match.start():].strip()
        return cls(int(match.group(1)), body.split(". ", 1)[1] if ". " in body else body)


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def error_reply(error: QueryError, version: str) -> Reply:
    # the version trailer as the server writes it (clickhouse-connect can scrub it);
    # some of chDB's messages have it already
    trailer = f" (version {version})" if version and "(version " not in error.message else ""
    body = f"Code: {error.code}. {error.message}{trailer}\n"
    return Reply(error.status, body.encode(), {
        "Content-Type": "text/plain; charset=UTF-8",
        "X-ClickHouse-Exception-Code": str(error.code)})


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _content_type(fmt: str) -> str:
    lower = fmt.lower()
    if lower.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if lower.startswith("json"):
        return "application/json; charset=UTF-8"
    if lower.startswith("csv"):
        return "text/csv; charset=UTF-8"
    if lower in ("pretty", "vertical", "markdown", "values", "xml") or lower.startswith("pretty"):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


@dataclass(slots=True)
class Statement:
    """One request's statement and how to run it."""

    sql: bytes  # an insert with data: its text up to (not with) its FORMAT clause
    database: str
    settings: dict[str, str]
    params: dict[str, str]  # bound parameters, by name (without ``param_``)
    output_format: str  # the format asked for when the SQL names none
    query_id: str
    insert_format: str | None = None  # an insert with data: the data's format
    data: bytes = b""

    @property
    def result_format(self) -> str | None:
        """The format of the statement's result set; None if it answers none."""
        if self.insert_format is not None:
            return None
        explicit = _TRAILING_FORMAT.search(self.sql)
        if explicit:
            return explicit.group(1).decode()
        return self.output_format if self.first_word in _RESULT_STATEMENTS else None

    @property
    def first_word(self) -> bytes:
        """The statement's keyword (SELECT, INSERT, USE...), upper case."""
        noise = _LEADING_NOISE.match(self.sql)
        word = _FIRST_WORD.match(self.sql, noise.end() if noise else 0)
        return word.group().upper() if word else b""


def split_insert(text: bytes) -> tuple[bytes, str, bytes] | None:
    """``INSERT INTO t (cols) FORMAT F`` and its data, if ``text`` is one: the
    statement without its FORMAT clause, F, and the data. As ClickHouse reads it,
    the data starts after the blanks that follow the format's name, and after one
    line break if they end in one (binary data may begin with any byte)."""
    match = _INSERT_DATA.match(text)
    if not match or _SELECTS.search(_BACKQUOTED.sub(b"", match.group(1))):
        return None  # INSERT ... SELECT or VALUES: SQL alone
    pos = match.end()
    while pos < len(text) and text[pos:pos + 1] in b" \t\f":
        pos += 1
    if text[pos:pos + 1] == b"\r":
        pos += 1
    if text[pos:pos + 1] == b"\n":
        pos += 1
    return match.group(1), match.group(2).decode(), text[pos:]


def parse_multipart(body: bytes, content_type: str) -> dict[str, str]:
    """The text fields of a ``multipart/form-data`` body (the query and bound
    parameters); a file field is external data, which this server lacks."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if not boundary:
        raise QueryError(BAD_ARGUMENTS, "DB::Exception: multipart body without a boundary. "
                         "(BAD_ARGUMENTS)")
    fields: dict[str, str] = {}
    for part in body.split(b"--" + boundary.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, _, value = part.partition(b"\r\n\r\n")
        disposition = head.decode("latin-1")
        if re.search(r'\bfilename="', disposition):
            raise QueryError(NOT_IMPLEMENTED, "DB::Exception: external data is not "
                             "implemented by this stand-in. (NOT_IMPLEMENTED)")
        name = re.search(r'\bname="([^"]*)"', disposition)
        if name:
            fields[name.group(1)] = value.removesuffix(b"\r\n").decode()
    return fields


class Engine:
    """The chDB session, used by one request at a time (chDB runs one statement
    at a time on a connection)."""

    def __init__(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        self._conn: Any = chdb.connect(path)
        self._lock = threading.Lock()
        # compressed bodies wait here while chDB decompresses them
        self._spool = tempfile.mkdtemp(prefix="clickhouse-standin-")
        self._database: str | None = None  # the USE in force; None: not known
        # the settings SET on the session (None: to a value not known)
        self._applied: dict[str, str | None] = {}
        version, zone = self._text("SELECT version(), timezone()").split("\t")
        self.version, self.timezone = version, zone
        self.known_settings = frozenset(self._text("SELECT name FROM system.settings").split("\n"))

    def _text(self, sql: str) -> str:
        return cast(bytes, self._conn.query(sql, "TabSeparated").bytes()).decode().rstrip("\n")

    def create_database(self, name: str) -> None:
        with self._lock:
            self._conn.query(f"CREATE DATABASE IF NOT EXISTS {_identifier(name)}", "TabSeparated")

    def decompress(self, body: bytes, encoding: str) -> bytes:
        """A request body as sent with ``Content-Encoding: encoding``, decompressed
        by chDB: the codecs (and their framing, e.g. one lz4 frame per block as
        clickhouse-connect writes) are ClickHouse's own."""
        method = _COMPRESSION.get(encoding.strip().lower())
        if method is None:
            raise QueryError(NOT_IMPLEMENTED, f"DB::Exception: Content-Encoding {encoding!r} "
                             "is not supported. (NOT_IMPLEMENTED)")
        fd, path = tempfile.mkstemp(dir=self._spool)
        try:
            with os.fdopen(fd, "wb") as spool:
                spool.write(body)
            sql = (f"SELECT raw FROM file({_sql_string(path)}, 'RawBLOB', 'raw String', "
                   f"{_sql_string(method)}) FORMAT RawBLOB")
            with self._lock:
                self._check_open()
                try:
                    return cast(bytes, self._conn.query(sql, "RawBLOB").bytes() or b"")
                except Exception as exc:
                    raise QueryError.from_engine(exc) from None
        finally:
            os.unlink(path)

    def run(self, statement: Statement) -> tuple[bytes, dict[str, str]]:
        """Runs the statement: its output, and the summary header's fields."""
        with self._lock:
            self._check_open()
            try:
                self._use(statement.database)
                self._set(statement.settings)
                if statement.insert_format is not None:
                    return b"", self._insert(statement)
                result = self._conn.query(statement.sql, statement.output_format,
                                          params=statement.params)
            except Exception as exc:
                # a failed USE (or the statement) leaves the session's database unsure
                self._database = None
                raise QueryError.from_engine(exc) from None
            finally:
                self._forget(statement)
            return cast(bytes, result.bytes() or b""), _summary(result)

    def _insert(self, statement: Statement) -> dict[str, str]:
        # chDB's streaming insert takes the statement without its FORMAT clause
        # and the data in that format, as the server reads the body after it
        inserter = self._conn.send_insert(statement.sql.decode(), statement.insert_format)
        with inserter:
            if statement.data:
                inserter.append(statement.data)
            done = inserter.finish()
        written = {"written_rows": str(done.rows_written), "written_bytes": str(done.bytes_written)}
        return {"read_rows": "0", "read_bytes": "0", **written,
                "result_rows": written["written_rows"], "result_bytes": written["written_bytes"],
                "elapsed_ns": str(int(done.elapsed * 1e9))}

    def _use(self, database: str) -> None:
        if database != self._database:
            self._conn.query(f"USE {_identifier(database)}", "TabSeparated")
            self._database = database

    def _set(self, settings: Mapping[str, str]) -> None:
        """Makes the session's settings the request's: every request carries its
        own (clickhouse-connect sends the same few each time, so this rarely runs
        a statement)."""
        for name in [n for n in self._applied if n not in settings]:
            self._conn.query(f"SET {name} = DEFAULT", "TabSeparated")
            del self._applied[name]
        for name, value in settings.items():
            if self._applied.get(name) != value:
                self._conn.query(f"SET {name} = {_sql_string(value)}", "TabSeparated")
                self._applied[name] = value

    def _forget(self, statement: Statement) -> None:
        """A client's own USE or SET changed the shared session: the next request
        puts its database again, and the settings named go back to their defaults
        unless it carries them (as each request without a session starts afresh)."""
        if statement.first_word == b"USE":
            self._database = None
        elif statement.first_word == b"SET":
            for name in _SET_NAMES.findall(statement.sql):
                if name.decode() in self.known_settings:
                    self._applied[name.decode()] = None

    def _check_open(self) -> None:
        if self._conn is None:
            raise QueryError(ABORTED, "DB::Exception: the server is shutting down. (ABORTED)")

    def close(self) -> None:
        """Waits for the statement running, if any, then closes the session."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        shutil.rmtree(self._spool, ignore_errors=True)


def _summary(result: Any) -> dict[str, str]:
    """The X-ClickHouse-Summary fields chDB's result has figures for."""
    try:
        return {"read_rows": str(result.rows_read()), "read_bytes": str(result.bytes_read()),
                "written_rows": str(result.rows_written()),
                "written_bytes": str(result.bytes_written()),
                "total_rows_to_read": str(result.rows_read()),
                "elapsed_ns": str(int(result.elapsed() * 1e9))}
    except Exception:  # a figure chDB's version lacks
        return {}


@dataclass(frozen=True, slots=True)
class Credentials:
    user: str
    password: str

    def check(self, headers: Mapping[str, str], params: Mapping[str, str]) -> QueryError | None:
        """None if the request presents this user and password; else ClickHouse's
        error (401 when it presents none, 403 when they are wrong)."""
        presented = _presented(headers, params)
        user, password = presented or ("default", "")
        good = (hmac.compare_digest(user.encode(), self.user.encode())
                and hmac.compare_digest(password.encode(), self.password.encode()))
        if good:
            return None
        return QueryError(AUTHENTICATION_FAILED, f"DB::Exception: {user}: Authentication failed: "
                          "password is incorrect, or there is no user with such name. "
                          "(AUTHENTICATION_FAILED)", status=403 if presented else 401)


def _presented(headers: Mapping[str, str], params: Mapping[str, str]) -> tuple[str, str] | None:
    """The user and password a request presents, the ways ClickHouse reads them."""
    if headers.get("X-ClickHouse-User") is not None:
        return headers["X-ClickHouse-User"], headers.get("X-ClickHouse-Key") or ""
    authorization = headers.get("Authorization") or ""
    if authorization[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(authorization[6:], validate=True) \
                .decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return ("", "\0")  # presented, and matching nobody
        return user, password
    if authorization:  # a bearer token: no user here has one
        return ("", "\0")
    if "user" in params or "password" in params:
        return params.get("user", "default"), params.get("password", "")
    return None


@dataclass(slots=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: Mapping[str, str]
    body: bytes


class Service:
    """Answers requests: routing, authentication, the statement's parts."""

    def __init__(self, engine: Engine, credentials: Credentials) -> None:
        self.engine = engine
        self.credentials = credentials

    def answer(self, request: Request) -> Reply:
        if request.path == "/ping" or (request.path == "/" and request.method in ("GET", "HEAD")
                                       and "query" not in request.params):
            return Reply(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
        if request.path != "/":
            return Reply(404, f"There is no handle {request.path}\n\nUse / or /ping.\n".encode(),
                         {"Content-Type": "text/plain; charset=UTF-8"})
        try:
            denied = self.credentials.check(request.headers, request.params)
            if denied:
                raise denied
            return self._run(self._statement(request))
        except QueryError as error:
            return error_reply(error, self.engine.version)

    def _statement(self, request: Request) -> Statement:
        params = dict(request.params)
        body = request.body
        content_type = request.headers.get("Content-Type") or ""
        if content_type.lower().startswith("multipart/form-data"):
            params.update(parse_multipart(body, content_type))
            body = b""
        elif body and request.headers.get("Content-Encoding", "identity") != "identity":
            body = self.engine.decompress(body, request.headers["Content-Encoding"])
        if params.get("compress") == "1" or params.get("decompress") == "1":
            raise QueryError(NOT_IMPLEMENTED, "DB::Exception: ClickHouse's native compression "
                             "is not implemented by this stand-in. (NOT_IMPLEMENTED)")
        text = params.get("query", "").encode()
        text = text + b"\n" + body if text and body else text or body
        if not text.strip():
            raise QueryError(SYNTAX_ERROR, "DB::Exception: Empty query. (SYNTAX_ERROR)")
        output_format = params.get("default_format") or "TabSeparated"
        if not _NAME.match(output_format) or output_format.lower() in _NOT_FORMATS:
            raise QueryError(UNKNOWN_FORMAT, f"DB::Exception: Unknown output format "
                             f"{output_format}. (UNKNOWN_FORMAT)")
        statement = Statement(
            sql=text, database=params.get("database") or "default",
            settings=self._settings(params),
            params={k[6:]: v for k, v in params.items() if k.startswith("param_")},
            output_format=output_format, query_id=params.get("query_id") or str(uuid.uuid4()))
        insert = split_insert(text)
        if insert:
            statement.sql, statement.insert_format, statement.data = insert
        return statement

    def _settings(self, params: Mapping[str, str]) -> dict[str, str]:
        """The request's settings chDB knows: the rest of the parameters (the HTTP
        transport's, or names chDB lacks) must not fail the statement."""
        return {k: v for k, v in params.items()
                if k not in _NOT_SETTINGS and not k.startswith("param_")
                and k in self.engine.known_settings and _NAME.match(k)}

    def _run(self, statement: Statement) -> Reply:
        output, summary = self.engine.run(statement)
        headers = {"X-ClickHouse-Query-Id": statement.query_id,
                   "X-ClickHouse-Summary": json.dumps(summary, separators=(",", ":")),
                   "X-ClickHouse-Timezone": self.engine.timezone}
        result_format = statement.result_format
        if result_format:
            headers["X-ClickHouse-Format"] = result_format
            headers["Content-Type"] = _content_type(result_format)
        else:
            headers["Content-Type"] = "text/plain; charset=UTF-8"
        return Reply(200, output, headers)


class BodyError(Exception):
    """A request body that could not be read as HTTP/1.1 frames it."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clickhouse-connect pools connections
    server_version = "clickhouse-standin"

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def _serve(self) -> None:
        started = time.monotonic()
        url = urlsplit(self.path)
        try:
            body = self._body()
        except BodyError as exc:
            self.close_connection = True
            reply = error_reply(QueryError(BAD_ARGUMENTS, f"DB::Exception: {exc}. "
                                           "(BAD_ARGUMENTS)", status=400), "")
        else:
            request = Request(self.command, url.path, dict(parse_qsl(url.query, True)),
                              _Headers(self.headers), body)
            try:
                reply = cast(StandinServer, self.server).service.answer(request)
            except Exception as exc:  # a bug here: answered, and logged without the request
                log.exception("request failed")
                reply = error_reply(QueryError(STD_EXCEPTION, f"DB::Exception: {exc} "
                                               "(STD_EXCEPTION)"), "")
        self._send(reply)
        # the path only: the query string can hold a password and the statement
        log.info("%s %s %d %.1fms", self.command, url.path, reply.status,
                 (time.monotonic() - started) * 1000)

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return b"".join(self._chunks())
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BodyError("bad Content-Length") from None
        return self.rfile.read(length) if length > 0 else b""

    def _chunks(self) -> Iterator[bytes]:
        """The chunks of a chunked body (urllib3 sends a streamed insert so)."""
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BodyError("bad chunk size") from None
            if size == 0:
                break
            chunk = self.rfile.read(size)
            if len(chunk) != size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BodyError("truncated chunk")
            yield chunk
        while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
            pass  # trailers

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _serve logs each request once, without its query string

    def log_message(self, format: str, *args: Any) -> None:
        # the HTTP layer's own messages can quote the request line, query string and
        # all: the error's code alone
        code = args[0] if args and isinstance(args[0], int) else "-"
        log.info("%s - %s rejected by the HTTP layer", self.command or "-", code)


class _Headers(Mapping[str, str]):
    """A request's headers by case-insensitive name (the first of each)."""

    def __init__(self, message: Any) -> None:
        self._message = message

    def __getitem__(self, name: str) -> str:
        value = self._message.get(name)
        if value is None:
            raise KeyError(name)
        return cast(str, value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._message.keys())

    def __len__(self) -> int:
        return len(self._message)


class StandinServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections do not hold up a stop

    def __init__(self, address: tuple[str, int], service: Service) -> None:
        super().__init__(address, Handler)
        self.service = service


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--path", default="/var/lib/clickhouse", help="chDB's data directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s clickhouse-standin %(message)s")
    credentials = Credentials(os.environ.get("CLICKHOUSE_USER") or "default",
                              os.environ.get("CLICKHOUSE_PASSWORD", ""))
    try:
        engine = Engine(args.path)
    except Exception as exc:  # chDB's message for a path another process holds says little
        log.error("cannot open chDB at %s (is another process using it?): %s", args.path, exc)
        return 1
    try:
        if os.environ.get("CLICKHOUSE_DB"):
            engine.create_database(os.environ["CLICKHOUSE_DB"])
        server = StandinServer((args.host, args.port), Service(engine, credentials))
    except BaseException:
        engine.close()
        raise
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    serving.start()
    log.info("chDB %s at %s; listening on %s:%d", engine.version, args.path, args.host,
             server.server_address[1])
    stop.wait()
    log.info("stopping")
    server.shutdown()
    server.server_close()
    engine.close()  # after the statement running, if any: chDB's files stay whole
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
