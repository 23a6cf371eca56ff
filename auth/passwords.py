"""Password hashing with Argon2id (argon2-cffi), on a bounded pool (``auth.hashpool``)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from auth.config import AuthSettings
from auth.hashpool import HashPool, Lane, LaneLimits

__all__ = ["Passwords"]


class Passwords:
    """Hash and verify off the event loop: Argon2id is deliberately slow."""

    def __init__(self, settings: AuthSettings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        threads = settings.argon2_threads
        self.pool = HashPool(threads, {
            "login": LaneLimits(budget=settings.argon2_login_queue, parallel=threads),
            "register": LaneLimits(budget=settings.argon2_register_queue,
                                   parallel=max(1, threads // 2))})
        # verified against when the email is unknown, so both paths cost the same
        self._dummy_hash = self._hasher.hash("dummy password for timing equality")

    async def hash(self, password: str, lane: Lane = "register") -> str:
        """Raises :class:`auth.hashpool.Busy` (503) when the lane is full."""
        return await self.pool.run(lane, lambda: self._hasher.hash(password))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Raises :class:`auth.hashpool.Busy` (503) when the login lane is full."""
        return await self.pool.run("login", lambda: self._verify(password_hash, password))

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._dummy_hash, password) and (
                password_hash is not None
            )
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    def close(self) -> None:
        self.pool.close()
