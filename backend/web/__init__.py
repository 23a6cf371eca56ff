"""The web page: the static files beside this module, served at ``/`` with a strict
Content-Security-Policy (scripts, styles and images from this origin only; network
calls to this origin, its WebSocket and the auth service).

Only the page's own files are served (:func:`is_page_asset`): the page, its
modules, style sheet and icon, beside this module. Everything else in the folder
(this module's source, ``__pycache__``) answers 404 as if it were not there."""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["ASSET_SUFFIXES", "WEB_DIR", "WebPage", "content_security_policy", "is_page_asset"]

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).parent
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
#: what the page is made of: the page, its modules, its style sheet, its icon
ASSET_SUFFIXES = frozenset({".html", ".js", ".css", ".svg"})


def is_page_asset(path: str) -> bool:
    """Whether ``path`` (relative to the folder, as :class:`StaticFiles` resolves it)
    names one of the page's files: top level, not hidden, of a page asset's type;
    ``.`` is the page itself (``index.html``)."""
    if path in ("", "."):
        return True
    parts = PurePosixPath(path).parts
    return (len(parts) == 1 and not parts[0].startswith(".")
            and PurePosixPath(parts[0]).suffix in ASSET_SUFFIXES)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(auth_url: str, ws_origin: str | None) -> str:
    connect = " ".join(filter(None, ("'self'", _origin(auth_url), ws_origin)))
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src {connect}; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'; object-src 'none'")


class WebPage(StaticFiles):
    """``index.html``, its modules, style sheet and icon (nothing else of the folder),
    each answered with the page's security headers; revalidated on every load
    (``no-cache`` with ETags)."""

    def __init__(self, *, auth_url: str) -> None:
        super().__init__(directory=WEB_DIR, html=True, check_dir=False)
        self.auth_url = auth_url

    async def check_config(self) -> None:
        if not (WEB_DIR / "index.html").is_file():  # an install without the page's files
            log.warning("the web page's files are missing from %s; / answers 404", WEB_DIR)

    async def get_response(self, path: str, scope: Scope) -> Response:
        if not is_page_asset(path):
            raise HTTPException(status_code=404)
        response = await super().get_response(path, scope)
        response.headers.update({
            "Content-Security-Policy": content_security_policy(self.auth_url, _ws_origin(scope)),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        })
        return response


def _ws_origin(scope: Scope) -> str | None:
    """The WebSocket origin matching the address the page was loaded from."""
    host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
    if not _HOST.fullmatch(host):
        return None
    return f"{'wss' if scope.get('scheme') == 'https' else 'ws'}://{host}"
