"""Logging: one line per record, with the service's name, to stderr, with no secrets.

Every record is formatted, traceback included, and then redacted
(:func:`servicekit.redaction.redact_secrets`): URL passwords and bearer tokens
never reach the log, whatever logged them. Request paths that uvicorn logs (its
access log and WebSocket lines) lose their query strings, which may carry users'
search text. Uncaught exceptions go through the same handler, and the handler's
report of a record it failed to write leaves the record's arguments out.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
from types import TracebackType
from typing import TextIO

from servicekit.redaction import redact_secrets, strip_query

__all__ = ["RedactingFormatter", "RedactingHandler", "configure_logging"]


class RedactingFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose whole output is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_secrets(super().format(_without_queries(record)))


def _without_queries(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of a uvicorn record that carries a request path, its query string
    dropped: the access log (client, method, path, version, status) and the
    WebSocket lines of ``uvicorn.error`` (client, path[, status]). The other
    arguments of those records hold no ``?``."""
    carries_path = record.name == "uvicorn.access" or (
        record.name == "uvicorn.error" and '"WebSocket %s"' in str(record.msg))
    if not carries_path or not isinstance(record.args, tuple):
        return record
    args = tuple(strip_query(a) if isinstance(a, str) else a for a in record.args)
    if args == record.args:
        return record
    changed = copy.copy(record)  # the record itself goes on to other handlers unchanged
    changed.args = args
    return changed


class RedactingHandler(logging.StreamHandler[TextIO]):
    """A stream handler whose report of its own failures (a closed stream, a format
    string that does not fit its arguments) names the record but never prints its
    arguments, as :meth:`logging.Handler.handleError` would."""

    def handleError(self, record: logging.LogRecord) -> None:
        if not logging.raiseExceptions:
            return
        kind, error, _ = sys.exc_info()
        what = f"{kind.__name__}: {error}" if kind is not None else "unknown error"
        with contextlib.suppress(Exception):
            sys.stderr.write(redact_secrets(
                f"--- logging error ({what}) for {record.msg!r} at "
                f"{record.pathname}:{record.lineno}\n"))


def configure_logging(service: str, level: str = "info") -> None:
    handler = RedactingHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(
        f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], value: BaseException,
                  traceback: TracebackType | None) -> None:
    """Uncaught exceptions are logged (so redacted) instead of printed as they are."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    logging.getLogger("uncaught").critical("uncaught exception", exc_info=(kind, value, traceback))
