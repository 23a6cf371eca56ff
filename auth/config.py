"""Settings of the auth service, built once per process and handed down."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.settings import (
    ServiceSettings,
    forwarded_ips_problems,
    origin_problems,
    url_password_problems,
)

__all__ = ["AuthSettings"]


class AuthSettings(ServiceSettings):
    """``AUTH_ENVIRONMENT=production`` refuses weak values (``servicekit.settings``)."""

    model_config = SettingsConfigDict(env_prefix="AUTH_")

    host: str = "127.0.0.1"
    port: int = 8001
    # the internal listener: /metrics and the detailed /readyz; an address only the
    # service's own network reaches
    internal_host: str = "127.0.0.1"
    internal_port: int = 8011
    database_url: str = "postgresql://postgres@127.0.0.1:5432/agentchat"
    # false: `python -m auth migrate` (as the schema's owner) migrates; the service
    # only waits at start until schema auth is at the newest revision
    migrate_on_start: bool = True
    redis_url: str = "redis://127.0.0.1:6379/0"
    # the URL names one node of a Redis Cluster (the others are discovered): stream
    # shards, sharded pub/sub (servicekit.redisclient); off: one Redis
    redis_cluster: bool = False
    keys_dir: Path = Path(".local-stack/keys")
    issuer: str = "agentchat-auth"
    audience: str = "agentchat"
    # below 60 s only outside production (tests of renewal and expiry)
    access_token_ttl_s: int = Field(default=900, ge=5, le=900)
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=3600)
    ws_ticket_ttl_s: int = Field(default=60, ge=5, le=60)
    # Argon2id, OWASP's minimum: 19 MiB, t=2, p=1
    argon2_memory_kib: int = Field(default=19_456, ge=19_456)
    argon2_time_cost: int = Field(default=2, ge=2)
    argon2_parallelism: int = Field(default=1, ge=1)
    # Argon2id runs on this many threads (default: the machine's cores); registrations
    # use at most half of them (at least one), so logins always keep the rest
    argon2_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # hashes admitted at once (running or waiting) per lane; one more answers
    # 503 busy with Retry-After, so a flood cannot queue without end. Separate
    # budgets: a registration flood fills its own small one, never the logins'
    argon2_login_queue: int = Field(default=64, ge=1)
    argon2_register_queue: int = Field(default=8, ge=1)
    # a spent refresh token presented again this soon after its rotation (a client
    # retrying after a network error) is rotated again instead of revoking the session
    refresh_reuse_grace_s: float = Field(default=5.0, ge=0, le=30)
    # login throttling: free failures, then doubling delays up to the cap (never a lockout)
    login_account_free_attempts: int = Field(default=5, ge=1)
    login_address_free_attempts: int = Field(default=30, ge=1)
    login_base_delay_s: float = Field(default=1.0, gt=0)
    login_max_delay_s: float = Field(default=900.0, gt=0)
    login_window_s: int = Field(default=900, ge=60)
    # registration throttling per address (each hashed attempt counts, success or
    # not): free attempts at once, then doubling delays up to the cap
    register_address_free_attempts: int = Field(default=5, ge=1)
    register_base_delay_s: float = Field(default=1.0, gt=0)
    register_max_delay_s: float = Field(default=3600.0, gt=0)
    register_window_s: int = Field(default=3600, ge=60)
    # addresses whose X-Forwarded-For is trusted (a reverse proxy in front of auth)
    forwarded_allow_ips: str = "127.0.0.1"
    cors_origins: list[str] = Field(default=["http://127.0.0.1:8000", "http://localhost:8000"])
    # the largest request body on either listener; larger ones answer 413 unread. The
    # biggest body, a registration, has at most 1,444 characters (email 320, password
    # 1,024, name 100): up to 17.3 KB when every one is JSON-escaped as a surrogate pair
    max_body_bytes: int = Field(default=32 * 1024, ge=1024)
    dependency_timeout_s: float = 2.0
    startup_timeout_s: float = 60.0
    log_level: str = "info"

    def production_problems(self) -> Mapping[str, Iterable[str]]:
        return {"database_url": url_password_problems(self.database_url),
                "redis_url": url_password_problems(self.redis_url),
                "cors_origins": origin_problems(self.cors_origins),
                "forwarded_allow_ips": forwarded_ips_problems(self.forwarded_allow_ips),
                "access_token_ttl_s": ["is below 60 s (for tests only)"]
                if self.access_token_ttl_s < 60 else []}
