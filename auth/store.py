"""Queries of the auth schema: users, sessions and refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from ulid import ULID

__all__ = ["EmailTaken", "Reused", "Store", "User", "hash_refresh_token", "new_refresh_token"]


@dataclass(frozen=True)
class User:
    id: str
    email: str
    display_name: str
    created_at: datetime

    def public(self) -> dict[str, str]:
        return {"id": self.id, "email": self.email, "display_name": self.display_name,
                "created_at": self.created_at.isoformat()}


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Reused:
    """A spent refresh token presented again: its session is revoked."""

    session_id: str


class EmailTaken(Exception):
    pass


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_user(self, email: str, password_hash: str, display_name: str) -> User:
        user_id = f"usr_{ULID()}"
        try:
            row = await self._pool.fetchrow(
                "INSERT INTO auth.users (id, email, password_hash, display_name) "
                "VALUES ($1, $2, $3, $4) RETURNING id, email, display_name, created_at",
                user_id, email, password_hash, display_name)
        except asyncpg.UniqueViolationError:
            raise EmailTaken(email) from None
        return User(**dict(row))

    async def user_by_email(self, email: str) -> tuple[User, str] | None:
        row = await self._pool.fetchrow(
            "SELECT id, email, display_name, created_at, password_hash FROM auth.users "
            "WHERE email = $1", email)
        if row is None:
            return None
        data = dict(row)
        password_hash = data.pop("password_hash")
        return User(**data), password_hash

    async def user_by_id(self, user_id: str) -> User | None:
        row = await self._pool.fetchrow(
            "SELECT id, email, display_name, created_at FROM auth.users WHERE id = $1", user_id)
        return User(**dict(row)) if row else None

    async def update_password_hash(self, user_id: str, password_hash: str) -> None:
        await self._pool.execute("UPDATE auth.users SET password_hash = $2 WHERE id = $1",
                                 user_id, password_hash)

    async def create_session(self, user_id: str, user_agent: str, client_address: str,
                             ttl: timedelta, refresh_token: str) -> str:
        session_id = f"ses_{ULID()}"
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO auth.sessions (id, user_id, user_agent, client_address, expires_at) "
                "VALUES ($1, $2, $3, $4, now() + $5::interval)",
                session_id, user_id, user_agent[:512], client_address[:64], ttl)
            await conn.execute(
                "INSERT INTO auth.refresh_tokens (token_hash, session_id) VALUES ($1, $2)",
                hash_refresh_token(refresh_token), session_id)
        return session_id

    async def rotate_refresh_token(self, token: str, new_token: str, *, grace_s: float
                                   ) -> tuple[str, str] | Reused | str:
        """Spend ``token`` and issue ``new_token`` for its session (RFC 9700 rotation).

        Returns ``(session_id, user_id)``, :class:`Reused` (spent before: the
        session is revoked) or ``invalid`` (unknown, or its session expired or
        revoked). A token spent less than ``grace_s`` ago whose
        successor was never used is rotated again: the client did not get the
        answer (a network error) and retries; the unused successor is spent.
        """
        old, new = hash_refresh_token(token), hash_refresh_token(new_token)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT t.session_id, t.spent_at, t.replaced_by, s.user_id, "
                "s.revoked_at IS NOT NULL OR s.expires_at < now() AS dead, "
                "t.spent_at > now() - $2::float8 * interval '1 second' AS in_grace "
                "FROM auth.refresh_tokens t JOIN auth.sessions s ON s.id = t.session_id "
                "WHERE t.token_hash = $1 FOR UPDATE OF t, s", old, grace_s)
            if row is None or row["dead"]:
                return "invalid"
            if row["spent_at"] is not None:
                successor_unused = await conn.fetchval(
                    "SELECT spent_at IS NULL FROM auth.refresh_tokens WHERE token_hash = $1",
                    row["replaced_by"])
                if not (row["in_grace"] and successor_unused):
                    await conn.execute(
                        "UPDATE auth.sessions SET revoked_at = now() WHERE id = $1 "
                        "AND revoked_at IS NULL", row["session_id"])
                    return Reused(row["session_id"])
                await conn.execute("UPDATE auth.refresh_tokens SET spent_at = now(), "
                                   "replaced_by = $2 WHERE token_hash = $1",
                                   row["replaced_by"], new)
            await conn.execute("UPDATE auth.refresh_tokens SET spent_at = coalesce(spent_at, "
                               "now()), replaced_by = $2 WHERE token_hash = $1", old, new)
            await conn.execute(
                "INSERT INTO auth.refresh_tokens (token_hash, session_id) VALUES ($1, $2)",
                new, row["session_id"])
            await conn.execute("UPDATE auth.sessions SET last_used_at = now() WHERE id = $1",
                               row["session_id"])
            return row["session_id"], row["user_id"]

    async def sessions(self, user_id: str) -> list[asyncpg.Record]:
        return list(await self._pool.fetch(
            "SELECT id, created_at, last_used_at, user_agent FROM auth.sessions "
            "WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now() "
            "ORDER BY last_used_at DESC", user_id))

    async def session_active(self, session_id: str) -> bool:
        active: bool = await self._pool.fetchval(
            "SELECT revoked_at IS NULL AND expires_at > now() FROM auth.sessions WHERE id = $1",
            session_id) or False
        return active

    async def revoke_sessions(self, user_id: str, session_id: str | None = None) -> list[str]:
        """Revoke one session of the user (or all when ``session_id`` is None)."""
        rows = await self._pool.fetch(
            "UPDATE auth.sessions SET revoked_at = now() WHERE user_id = $1 "
            "AND ($2::text IS NULL OR id = $2) AND revoked_at IS NULL RETURNING id",
            user_id, session_id)
        return [row["id"] for row in rows]
