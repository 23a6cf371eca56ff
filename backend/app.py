"""The backend's ASGI app: wiring of settings, dependencies, tasks and routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.admission import SocketAdmission
from backend.analytics import AnalyticsStore, Ingester
from backend.api import router
from backend.approvals import RunApprovals
from backend.config import BackendSettings
from backend.internal import router as internal_router
from backend.lifecycle import LifecycleApplier
from backend.reaper import Reaper
from backend.revocation import RevocationFollower, RevocationHandler
from backend.runs import RunTransitions
from backend.shared import BackendState
from backend.store import Store
from backend.tokens import TokenVerifier
from backend.web import WebPage
from backend.ws import Gateway
from bridge.approvals import Approvals
from bridge.emitter import EventEmitter
from bridge.fanout import UserEventHub
from bridge.ingest import IngestBusy
from bridge.integration import AgentWebSocketBridge
from bridge.machine import BridgeMachine, BridgeState
from bridge.registry import ThreadRunRegistry
from bridge.streams import UserStreams
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
    problem,
)
from servicekit.migrations import prepare_schema
from servicekit.postgres import create_pool
from servicekit.redaction import redact_url
from servicekit.redisclient import make_redis
from servicekit.startup import retry_until
from servicekit.tasks import cancel_and_wait

__all__ = ["analytics_failed", "create_app", "socket_first"]

log = logging.getLogger(__name__)


async def analytics_failed(_: Request, exc: Exception) -> JSONResponse:
    """ClickHouse did not answer (down, or a statement failed): 503, retry later."""
    log.warning("clickhouse could not answer: %s", exc)
    return problem(503, "analytics_unavailable", "analytics could not be read; retry later")


async def ingest_busy(_: Request, exc: Exception) -> JSONResponse:
    """The ingest stream is at its cap: 503 with a delay; nothing was appended."""
    return problem(503, "ingest_busy", "analytics rows are waiting to be stored; retry later",
                   {"Retry-After": "2"})


MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: BackendSettings) -> ServiceApps:
    """The public app (REST, the web page; ``/ws`` through :func:`socket_first`) and
    the internal one (the workers' internal API, ``/metrics``, the detailed
    ``/readyz``), sharing the state the public app's lifespan builds."""
    gateway = Gateway()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout = settings.startup_timeout_s
        await prepare_schema(settings.database_url, MIGRATIONS, "app",
                             migrate_on_start=settings.migrate_on_start, timeout=timeout)
        pool = await create_pool(settings.database_url, max_size=20,
                                 timeout_s=settings.dependency_timeout_s)
        redis = make_redis(settings.redis_url, timeout=settings.dependency_timeout_s,
                           max_connections=settings.redis_max_connections,
                           cluster=settings.redis_cluster)
        http = httpx.AsyncClient(timeout=settings.dependency_timeout_s)
        verifier = TokenVerifier(
            http=http, redis=redis, jwks_url=f"{settings.auth_url}/.well-known/jwks.json",
            issuer=settings.token_issuer, audience=settings.token_audience)
        analytics = None
        if settings.analytics_ingest:
            analytics = AnalyticsStore(settings.clickhouse_url, settings.clickhouse_database)
            await retry_until(analytics.setup, what="clickhouse setup", timeout=timeout)
            log.info("clickhouse ready at %s", redact_url(settings.clickhouse_url))
        hub = UserEventHub(redis)

        async def initialize() -> None:
            await redis.ping()
            await hub.start()

        async def probe() -> None:
            await initialize()
            hub.check_alive()

        bridge = AgentWebSocketBridge(
            initialize=initialize, probe=probe, on_recovered=hub.resync,
            on_transition=lambda t: bridge_state.set(list(BridgeState).index(t.after)),
            machine=BridgeMachine(max_attempts=settings.bridge_max_attempts,
                                  max_delay_s=settings.bridge_max_delay_s),
            interval_s=settings.bridge_probe_interval_s)
        await bridge.ensure_integration()
        store = Store(pool)
        admission = SocketAdmission(redis, replica_id=settings.replica_id,
                                    limit=settings.ws_max_connections_per_user,
                                    lease_s=settings.ws_connection_lease_s)
        emitter = EventEmitter(redis, history_maxlen=settings.history_maxlen,
                               history_ttl_s=settings.history_ttl_s,
                               history_max_bytes=settings.history_max_bytes,
                               event_max_bytes=settings.event_max_bytes)
        approvals = RunApprovals(pool, Approvals(redis, hash_ttl_s=settings.history_ttl_s),
                                 emitter, counted=lambda outcome: approvals_counted.labels(
                                     outcome).inc())
        runs = RunTransitions(store, redis, ThreadRunRegistry(redis),
                              max_active_per_user=settings.max_active_runs_per_user,
                              max_waiting_per_thread=settings.max_queued_runs_per_thread,
                              dispatch_window=settings.dispatch_window_per_user,
                              history_bytes_per_hour=settings.history_bytes_per_hour,
                              memory_tokens=settings.thread_memory_tokens,
                              run_hash_ttl_s=settings.history_ttl_s, approvals=approvals)
        app.state.backend = BackendState(
            settings=settings, pool=pool, redis=redis, verifier=verifier, store=store,
            runs=runs, approvals=approvals,
            analytics=analytics, hub=hub, bridge=bridge,
            streams=UserStreams(redis, history_ttl_s=settings.history_ttl_s),
            admission=admission)
        tasks = [asyncio.create_task(Reaper(runs, redis, emitter, approvals=approvals).run(),
                                     name="reaper"),
                 asyncio.create_task(LifecycleApplier(
            runs, redis, consumer=settings.replica_id).run(), name="lifecycle"),
                 asyncio.create_task(verifier.keep_keys_fresh(), name="jwks"),
                 asyncio.create_task(RevocationFollower(redis, RevocationHandler(
                     verifier, lambda: gateway.open_connections)).run(), name="revocations"),
                 asyncio.create_task(bridge.monitor(), name="bridge-monitor"),
                 asyncio.create_task(admission.run(), name="socket-leases")]
        if analytics is not None:
            tasks.append(asyncio.create_task(Ingester(
                redis, analytics, consumer=settings.replica_id,
                batch_size=settings.ingest_batch_size,
                interval_s=settings.ingest_interval_s,
                dead_letters=dead_letters).run(), name="ingester"))
        log.info("backend %s ready on %s:%s (internal listener %s:%s)", settings.replica_id,
                 settings.host, settings.port, settings.internal_host, settings.internal_port)
        try:
            yield
        finally:
            await gateway.close_all()
            await cancel_and_wait(*tasks)
            await hub.stop()
            await http.aclose()
            await redis.aclose()
            await pool.close()
            if analytics is not None:
                analytics.close()

    app = FastAPI(title="agentchat backend", version="0.1.0", lifespan=lifespan,
                  telemetry=NO_OPENTELEMETRY)
    app.state.gateway = gateway
    install_problem_handlers(app)
    app.add_exception_handler(ClickHouseError, analytics_failed)

    app.add_exception_handler(IngestBusy, ingest_busy)

    # the body cap runs before routing, parsing and authentication; only the request
    # metrics, added after it, wrap it (a refusal is counted)
    app.add_middleware(BodyLimit, limits=BodyLimits(
        default=settings.max_body_bytes,
        routes={("POST", "/api/analytics/usage"): settings.usage_max_body_bytes}))
    metrics = HttpMetrics("backend")
    metrics.instrument(app)
    registry = metrics.registry
    bridge_state = Gauge("bridge_state", "AgentWebSocketBridge state: 0 UNINITIALIZED, "
                         "1 INITIALIZING, 2 ACTIVE, 3 DEGRADED, 4 FAILED", registry=registry)
    dead_letters = Counter("analytics_dead_letters", "ingest entries moved to analytics:dead",
                           registry=registry)
    approvals_counted = Counter("tool_approvals", "tool calls that waited for their user, by "
                                "how they ended: approved, rejected, timeout, stopped",
                                ["outcome"], registry=registry)
    Gauge("ws_connections", "open WebSocket connections", registry=registry).set_function(
        lambda: gateway.connections)

    def checks() -> Mapping[str, Check]:
        state: BackendState = app.state.backend
        probes: dict[str, Check] = {"postgres": lambda: state.pool.fetchval("SELECT 1"),
                                    "redis": state.redis.ping}
        if state.analytics is not None:
            probes["clickhouse"] = state.analytics.ping
        probes["auth_keys"] = state.verifier.require_keys
        probes["bridge"] = require_bridge
        return probes

    async def require_bridge() -> None:
        bridge: AgentWebSocketBridge = app.state.backend.bridge
        if not bridge.machine.ready:
            raise RuntimeError(f"bridge is {bridge.state}")

    def extra() -> Mapping[str, Any]:
        state: BackendState = app.state.backend
        return {"bridge": str(state.bridge.state), "connections": gateway.connections}

    install_health_routes(app, checks, timeout=settings.dependency_timeout_s)
    app.include_router(router)

    # the web page: what it needs to know, then its files at `/`, after every other route
    @app.get("/app-config.json", include_in_schema=False)
    async def app_config() -> dict[str, str]:
        return {"auth_url": settings.public_auth_url}

    app.mount("/", WebPage(auth_url=settings.public_auth_url), name="web")

    internal = create_internal_app(
        app, metrics=metrics, checks=checks, timeout=settings.dependency_timeout_s,
        body_limits=BodyLimits(default=settings.internal_max_body_bytes), extra=extra)
    internal.add_exception_handler(ClickHouseError, analytics_failed)
    internal.include_router(internal_router)
    return ServiceApps(public=app, internal=internal)


def socket_first(app: FastAPI) -> ASGIApp:
    """The ASGI entry point: ``/ws`` goes straight to the gateway, everything else to
    ``app``. A socket lives for hours; skipping the HTTP middleware stack saves each
    one the frames of every middleware layer (measured: several KiB per socket)."""

    async def entry(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            await app.state.gateway.serve(WebSocket(scope, receive, send), app.state.backend)
        else:
            await app(scope, receive, send)

    return entry
