"""The one way services open their Postgres pool."""

from __future__ import annotations

import asyncpg

__all__ = ["create_pool"]


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """Nothing to undo when a connection goes back to the pool: the services set no
    session variables, hold no advisory locks, cursors or LISTENs (an open
    transaction is still rolled back by asyncpg). It saves the round trip of
    asyncpg's default ``RESET ALL`` and friends on every release."""


async def create_pool(url: str, *, max_size: int, timeout_s: float) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url, min_size=1, max_size=max_size, timeout=timeout_s, command_timeout=timeout_s * 5,
        reset=_no_session_state)
    return pool
