"""The auth service's ASGI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import Redis

from auth.config import AuthSettings
from auth.keys import KeyStore
from auth.passwords import Passwords
from auth.routes import router
from auth.shared import AuthState
from auth.store import Store
from auth.throttle import LoginThrottle, RegisterThrottle, ThrottlePolicy
from auth.tokens import TokenIssuer
from servicekit import (
    NO_OPENTELEMETRY,
    BodyLimit,
    BodyLimits,
    Check,
    HttpMetrics,
    ServiceApps,
    create_internal_app,
    install_health_routes,
    install_problem_handlers,
)
from servicekit.migrations import prepare_schema
from servicekit.postgres import create_pool
from servicekit.redisclient import make_redis

__all__ = ["create_app"]

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def _throttle(settings: AuthSettings, redis: Redis) -> LoginThrottle:
    def policy(free: int) -> ThrottlePolicy:
        return ThrottlePolicy(free_attempts=free, base_delay_s=settings.login_base_delay_s,
                              max_delay_s=settings.login_max_delay_s,
                              window_s=settings.login_window_s)
    return LoginThrottle(redis, account=policy(settings.login_account_free_attempts),
                         address=policy(settings.login_address_free_attempts))


def _register_throttle(settings: AuthSettings, redis: Redis) -> RegisterThrottle:
    return RegisterThrottle(redis, ThrottlePolicy(
        free_attempts=settings.register_address_free_attempts,
        base_delay_s=settings.register_base_delay_s, max_delay_s=settings.register_max_delay_s,
        window_s=settings.register_window_s))


def create_app(settings: AuthSettings) -> ServiceApps:
    """The public app (the auth API, JWKS) and the internal one (``/metrics``, the
    detailed ``/readyz``), sharing the state the public app's lifespan builds."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await prepare_schema(settings.database_url, MIGRATIONS, "auth",
                             migrate_on_start=settings.migrate_on_start,
                             timeout=settings.startup_timeout_s)
        pool = await create_pool(settings.database_url, max_size=10,
                                 timeout_s=settings.dependency_timeout_s)
        redis = make_redis(settings.redis_url, timeout=settings.dependency_timeout_s,
                           cluster=settings.redis_cluster)
        keys = KeyStore(Path(settings.keys_dir))
        passwords = Passwords(settings)
        app.state.auth = AuthState(
            settings=settings, pool=pool, redis=redis, keys=keys,
            passwords=passwords, store=Store(pool),
            tokens=TokenIssuer(settings, keys), throttle=_throttle(settings, redis),
            register_throttle=_register_throttle(settings, redis))
        log.info("auth ready on %s:%s, internal listener %s:%s (key %s)", settings.host,
                 settings.port, settings.internal_host, settings.internal_port,
                 keys.current.kid)
        try:
            yield
        finally:
            passwords.close()
            await redis.aclose()
            await pool.close()

    app = FastAPI(title="agentchat auth", version="0.1.0", lifespan=lifespan,
                  telemetry=NO_OPENTELEMETRY)
    # middleware added later wraps what came before: the body cap runs before routing,
    # parsing and every dependency (authentication); only CORS (its 413 stays readable
    # by the page) and the request metrics (it is counted) see a request earlier
    limits = BodyLimits(default=settings.max_body_bytes)
    app.add_middleware(BodyLimit, limits=limits)
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                       allow_credentials=True, allow_methods=["*"], allow_headers=["*"])
    install_problem_handlers(app)
    metrics = HttpMetrics("auth")
    metrics.instrument(app)

    def checks() -> Mapping[str, Check]:
        state: AuthState = app.state.auth
        return {"postgres": lambda: state.pool.fetchval("SELECT 1"),
                "redis": state.redis.ping}

    install_health_routes(app, checks, timeout=settings.dependency_timeout_s)
    app.include_router(router)
    internal = create_internal_app(app, metrics=metrics, checks=checks,
                                   timeout=settings.dependency_timeout_s, body_limits=limits)
    return ServiceApps(public=app, internal=internal)
