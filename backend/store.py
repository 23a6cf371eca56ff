"""Queries of the ``app`` schema: threads, messages and runs.

Every read and write names the owning ``user_id``: a row of another user is
never found, which the API answers exactly like a row that does not exist.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg
from ulid import ULID

__all__ = ["ACTIVE", "Store", "new_id"]

ACTIVE = ("queued", "running")
_RUN_COLUMNS = ("id, thread_id, agent, status, input, result, error, created_at, started_at, "
                "finished_at")


def new_id(prefix: str) -> str:
    return f"{prefix}_{ULID()}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def thread_json(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "title": row["title"], "created_at": _iso(row["created_at"]),
            "updated_at": _iso(row["updated_at"])}


def run_json(row: asyncpg.Record) -> dict[str, Any]:
    run: dict[str, Any] = {
        "id": row["id"], "thread_id": row["thread_id"], "agent": row["agent"],
        "status": row["status"], "input": row["input"], "created_at": _iso(row["created_at"])}
    if row["result"] is not None:
        run["result"] = row["result"]
    if row["error"] is not None:
        run["error"] = json.loads(row["error"])
    for name in ("started_at", "finished_at"):
        if row[name] is not None:
            run[name] = _iso(row[name])
    return run


def message_json(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "role": row["role"], "content": row["content"],
            "run_id": row["run_id"], "created_at": _iso(row["created_at"])}


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create_thread(self, user_id: str, title: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "INSERT INTO app.threads (id, user_id, title) VALUES ($1, $2, $3) RETURNING *",
            new_id("thr"), user_id, title)
        return thread_json(row)

    async def thread(self, user_id: str, thread_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM app.threads WHERE id = $1 AND user_id = $2", thread_id, user_id)
        return thread_json(row) if row else None

    async def rename_thread(self, user_id: str, thread_id: str, title: str
                            ) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            "UPDATE app.threads SET title = $3, updated_at = now() "
            "WHERE id = $1 AND user_id = $2 RETURNING *", thread_id, user_id, title)
        return thread_json(row) if row else None

    async def delete_thread(self, user_id: str, thread_id: str
                            ) -> list[tuple[str, str]] | None:
        """Delete the thread (its messages and runs cascade); returns its active runs
        (id, agent)."""
        async with self.pool.acquire() as conn, conn.transaction():
            owner = await conn.fetchval(
                "SELECT user_id FROM app.threads WHERE id = $1 FOR UPDATE", thread_id)
            if owner != user_id:
                return None
            active = await conn.fetch(
                "SELECT id, agent FROM app.runs WHERE thread_id = $1 "
                "AND status = ANY($2::text[])", thread_id, list(ACTIVE))
            await conn.execute("DELETE FROM app.threads WHERE id = $1", thread_id)
        return [(row["id"], row["agent"]) for row in active]

    async def threads(self, user_id: str, limit: int, cursor: str | None
                      ) -> tuple[list[dict[str, Any]], str | None]:
        rows = await self.pool.fetch(
            "SELECT * FROM app.threads WHERE user_id = $1 AND ($2::text IS NULL OR id < $2) "
            "ORDER BY id DESC LIMIT $3", user_id, cursor, limit + 1)
        return _page([thread_json(r) for r in rows], limit)

    async def messages(self, user_id: str, thread_id: str, limit: int, cursor: str | None
                       ) -> tuple[list[dict[str, Any]], str | None]:
        rows = await self.pool.fetch(
            "SELECT * FROM app.messages WHERE thread_id = $1 AND user_id = $2 "
            "AND ($3::text IS NULL OR id > $3) ORDER BY id LIMIT $4",
            thread_id, user_id, cursor, limit + 1)
        return _page([message_json(r) for r in rows], limit)

    async def search_messages(self, user_id: str, text: str, limit: int
                              ) -> list[dict[str, Any]]:
        """The user's messages containing ``text`` (case-insensitive), newest first."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self.pool.fetch(
            "SELECT * FROM app.messages WHERE user_id = $1 AND content ILIKE $2 "
            "ORDER BY id DESC LIMIT $3", user_id, pattern, limit)
        return [{**message_json(r), "thread_id": r["thread_id"]} for r in rows]

    async def run(self, user_id: str, run_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            f"SELECT {_RUN_COLUMNS} FROM app.runs WHERE id = $1 AND user_id = $2",
            run_id, user_id)
        return run_json(row) if row else None


def _page(items: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], str | None]:
    if len(items) > limit:
        return items[:limit], items[limit - 1]["id"]
    return items, None
