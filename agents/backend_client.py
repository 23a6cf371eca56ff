"""The worker's client of the backend's internal API (``backend/internal.py``).

Tools that need a user's data (usage aggregates in ClickHouse, messages in
Postgres) ask the backend on the run owner's behalf: the user id comes from the
run's context, never from a model's arguments, so a run can only ever read its
own user's data. One client per worker; it holds no user data.

It is built on aiohttp: hundreds of runs call at once, and httpx's connection
pool spent more CPU finding a connection for each waiting request than the
requests themselves took.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from agents.errors import ToolError

__all__ = ["BackendClient"]


class BackendClient:
    """At most ``connections`` requests are in flight; the others wait their turn."""

    def __init__(self, base_url: str, token: str | None, *, timeout_s: float = 10.0,
                 connections: int = 32) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        # made on first use, inside the event loop that uses it
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._connections))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def usage(self, user_id: str, *, start: str, end: str, group_by: str,
                    short_tokens: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"from": start, "to": end, "group_by": group_by}
        if short_tokens is not None:
            params["short_tokens"] = short_tokens
        return await self._get(f"/internal/users/{user_id}/usage", params)

    async def search_messages(self, user_id: str, text: str, limit: int) -> dict[str, Any]:
        return await self._get(f"/internal/users/{user_id}/messages", {"q": text, "limit": limit})

    async def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._http().get(f"{self._base_url}{path}", params=params) as response:
                if response.status >= 400:
                    raise ToolError("backend_error", f"the backend answered {response.status}: "
                                                     f"{await _detail(response)}")
                answer: dict[str, Any] = await response.json()
                return answer
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ToolError("backend_unavailable",
                            f"the backend could not be reached: {type(exc).__name__}") from None


async def _detail(response: aiohttp.ClientResponse) -> str:
    try:
        body = await response.json(content_type=None)
        return str(body.get("detail") or response.reason)
    except (ValueError, AttributeError, aiohttp.ClientError):
        return str(response.reason)
