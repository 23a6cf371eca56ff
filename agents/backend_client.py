"""The worker's client of the backend's internal API (``backend/internal.py``).

Tools that need a user's data (usage aggregates in ClickHouse, messages in
Postgres) ask the backend on the run owner's behalf: the user id comes from the
run's context, never from a model's arguments, so a run can only ever read its
own user's data. One client per worker; it holds no user data.
"""

from __future__ import annotations

from typing import Any

import httpx

from agents.errors import ToolError

__all__ = ["BackendClient"]


class BackendClient:
    def __init__(self, base_url: str, token: str | None, *, timeout_s: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers,
                                       timeout=timeout_s, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

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
            response = await self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ToolError("backend_unavailable",
                            f"the backend could not be reached: {type(exc).__name__}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail") or response.reason_phrase
            except ValueError:
                detail = response.reason_phrase
            raise ToolError("backend_error", f"the backend answered {response.status_code}: "
                                             f"{detail}")
        answer: dict[str, Any] = response.json()
        return answer
