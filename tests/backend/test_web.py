"""The web page's static mount serves the page's own files and nothing else."""

from __future__ import annotations

import httpx
import pytest

from backend.web import WEB_DIR, is_page_asset
from e2e.scenarios import Target

ASSETS = {"/": "text/html", "/index.html": "text/html", "/app.js": "javascript",
          "/api.js": "javascript", "/socket.js": "javascript", "/style.css": "text/css",
          "/favicon.svg": "image/svg+xml"}


def test_only_top_level_page_files_are_assets() -> None:
    assert is_page_asset(".")
    assert is_page_asset("app.js")
    assert not is_page_asset("__init__.py")
    assert not is_page_asset("__pycache__/__init__.cpython-311.pyc")
    assert not is_page_asset("sub/app.js")
    assert not is_page_asset(".hidden.js")
    assert not is_page_asset("..")


@pytest.mark.parametrize(("path", "kind"), sorted(ASSETS.items()))
async def test_the_page_and_its_assets_answer(target: Target, path: str, kind: str) -> None:
    async with httpx.AsyncClient(base_url=target.backend_url) as http:
        answer = await http.get(path)
    assert answer.status_code == 200
    assert kind in answer.headers["content-type"]
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_every_file_the_page_needs_is_an_asset() -> None:
    for file in WEB_DIR.iterdir():
        if file.suffix in (".html", ".js", ".css", ".svg"):
            assert is_page_asset(file.name)


@pytest.mark.parametrize("path", [
    "/__init__.py", "/web.py", "/config.py", "/anything.py", "/__pycache__/",
    "/__pycache__/__init__.cpython-311.pyc", "/__pycache__/__init__.cpython-312.pyc",
    "/%2e%2e/config.py", "/..%2fconfig.py", "/.hidden.js", "/README.md",
])
async def test_anything_else_is_not_found(target: Target, path: str) -> None:
    async with httpx.AsyncClient(base_url=target.backend_url) as http:
        answer = await http.get(path)
    assert answer.status_code == 404, answer.text[:200]
    assert answer.headers["content-type"] == "application/problem+json"
    assert "import" not in answer.text
