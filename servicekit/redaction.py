"""Taking secrets out of text before it is logged.

A URL's password (``scheme://user:password@host`` → ``scheme://user:***@host``),
a bearer token (``Bearer ***``), and the query string of a request path (it may
carry users' search text) are replaced; everything else is left as it is.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact_secrets", "redact_url", "strip_query"]

MASK = "***"

# a scheme, a user (perhaps empty), a colon, then the password up to the last @ of
# the URL: wider than urllib.parse, so that a password with a raw / ? # in it (a
# broken URL, but one that may well be logged) is masked whole. Whitespace, quotes
# and angle brackets end a URL, so one inside a sentence or a repr stays apart.
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s'\"<>]*):[^\s'\"<>]*@")
_BEARER = re.compile(r"\b(bearer)(\s+)[A-Za-z0-9\-._~+/]{8,}=*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with the password of its user info, if any, replaced by ``***``."""
    return _USERINFO.sub(rf"\1:{MASK}@", url)


def redact_secrets(text: str) -> str:
    """``text`` with every URL's password and every bearer token replaced by ``***``."""
    return _BEARER.sub(rf"\1\2{MASK}", redact_url(text))


def strip_query(path: str) -> str:
    """A request path without its query string (``/a?q=text`` → ``/a``)."""
    return path.partition("?")[0]
