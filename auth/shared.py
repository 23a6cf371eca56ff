"""What the auth service's handlers share: built once at start, handed down."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis

from auth.config import AuthSettings
from auth.keys import KeyStore
from auth.passwords import Passwords
from auth.store import Store
from auth.throttle import LoginThrottle, RegisterThrottle
from auth.tokens import TokenIssuer

__all__ = ["AuthState"]


@dataclass(frozen=True)
class AuthState:
    settings: AuthSettings
    pool: asyncpg.Pool
    redis: Redis
    keys: KeyStore
    passwords: Passwords
    store: Store
    tokens: TokenIssuer
    throttle: LoginThrottle
    register_throttle: RegisterThrottle
