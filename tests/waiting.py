"""Waiting helpers shared by the tests."""

from __future__ import annotations

import asyncio
import time

from e2e.client import ApiError, ChatClient


async def refused_within(client: ChatClient, limit: float, *, by: str = "backend") -> float:
    """Seconds until the backend (or ``by="auth"``) refuses the client's access
    token (401)."""
    url = (f"{client.auth_url}/auth/me" if by == "auth"
           else f"{client.backend_url}/api/threads")
    started = time.monotonic()
    while time.monotonic() - started < limit + 1.0:
        try:
            await client._call("GET", url)
        except ApiError as exc:
            assert exc.status == 401
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{by} still accepts the access token after {limit + 1.0} s")


async def usage_visible(client: ChatClient, count: int, timeout: float = 20.0) -> None:
    """Wait until ClickHouse holds ``count`` of the client's usage records."""
    deadline = time.monotonic() + timeout
    while await client.usage_requests() < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} usage records not visible within {timeout} s")
        await asyncio.sleep(0.1)
