"""Settings of the backend, built once per process and handed down."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from bridge.limits import EventPathLimits
from servicekit.settings import (
    ServiceSettings,
    clickhouse_url_problems,
    origin_problems,
    secret_problems,
    url_password_problems,
)

__all__ = ["BackendSettings"]


class BackendSettings(ServiceSettings, EventPathLimits):
    """``BACKEND_ENVIRONMENT=production`` refuses weak values (``servicekit.settings``)."""

    # history and ingest bounds (BACKEND_HISTORY_*, BACKEND_EVENT_MAX_BYTES,
    # BACKEND_INGEST_MAXLEN: 503 ingest_busy beyond) come from EventPathLimits

    model_config = SettingsConfigDict(env_prefix="BACKEND_")

    replica_id: str = "backend-1"
    host: str = "127.0.0.1"
    port: int = 8000
    # the internal listener: the workers' internal API, /metrics, the detailed /readyz;
    # an address only the service's own network reaches
    internal_host: str = "127.0.0.1"
    internal_port: int = 8010
    database_url: str = "postgresql://postgres@127.0.0.1:5432/agentchat"
    # false: `python -m backend migrate` (as the schema's owner) migrates; the service
    # only waits at start until schema app is at the newest revision
    migrate_on_start: bool = True
    redis_url: str = "redis://127.0.0.1:6379/0"
    # the URL names one node of a Redis Cluster (the others are discovered): stream
    # shards, sharded pub/sub (servicekit.redisclient); off: one Redis
    redis_cluster: bool = False
    auth_url: str = "http://127.0.0.1:8001"
    # the auth service as a browser reaches it (the web page at `/` calls it directly)
    public_auth_url: str = "http://127.0.0.1:8001"
    token_issuer: str = "agentchat-auth"
    token_audience: str = "agentchat"
    # "chdb:///path" (embedded, one owning process) or "http://user:pass@host:8123"
    clickhouse_url: str = "chdb:///.local-stack/clickhouse"
    clickhouse_database: str = "agentchat"
    # whether this replica inserts the ingest stream into ClickHouse
    analytics_ingest: bool = True
    ingest_batch_size: int = Field(default=1000, ge=1)
    ingest_interval_s: float = 0.5
    # WebSocket gateway
    ws_allowed_origins: list[str] = Field(
        default=["http://127.0.0.1:8000", "http://localhost:8000"])
    ws_auth_timeout_s: float = 5.0
    ws_max_frame_bytes: int = 64 * 1024
    # a user's open sockets across all replicas (4409 beyond); each replica leases
    # its sockets in Redis for this long and renews them every third of it, so a
    # replica that died stops counting within a lease
    ws_max_connections_per_user: int = 10
    ws_connection_lease_s: float = Field(default=30.0, ge=1.0)
    # sockets not yet authenticated from one client address (1013 beyond); each is
    # held at most ws_auth_timeout_s
    ws_max_unauthenticated_per_address: int = Field(default=20, ge=1)
    ws_send_queue: int = 1000
    ws_heartbeat_s: int = 20
    #: permessage-deflate: off by default; its zlib state costs about 34 KiB per
    #: socket and CPU per frame, for events of a few hundred bytes.
    ws_compression: bool = False
    # live events wait this long for the client's first message (a `resume`, usually)
    ws_live_hold_s: float = 0.5
    # AgentWebSocketBridge: probe interval, failed recoveries before FAILED, backoff cap
    bridge_probe_interval_s: float = 0.5
    bridge_max_attempts: int = 5
    bridge_max_delay_s: float = 5.0
    # per-user limits (docs/security.md, "Per-user limits"): one user cannot take the
    # service from the others. Active (queued + running) runs of a user: 429
    # too_many_runs beyond; runs waiting their turn on one thread (enqueue,
    # interrupt): 429 too_many_runs beyond
    max_active_runs_per_user: int = Field(default=20, ge=1)
    max_queued_runs_per_thread: int = Field(default=10, ge=1)
    # runs of one user waiting in the run queue at once (the queue's fair share): the
    # rest wait their turn in Postgres, so one user's backlog stands at most this
    # deep in front of another user's run, whatever the number of workers
    dispatch_window_per_user: int = Field(default=4, ge=1)
    # the thread's earlier turns a run is given (bridge.memory: an estimate of a
    # quarter token per UTF-8 byte; the oldest turns dropped first; 0: none)
    thread_memory_tokens: int = Field(default=2000, ge=0, le=100_000)
    # bytes of events a user's runs may add to their history in an hour (counted by the
    # emit script): beyond, new runs are refused with 429 quota_exceeded until the
    # next hour; runs already going finish (their history trims its oldest events)
    history_bytes_per_hour: int = Field(default=256 * 1024 * 1024, ge=64 * 1024)
    # socket messages, per connection (token buckets: burst, then a steady rate);
    # beyond, an error frame `rate_limited` with retry_after_ms, the socket stays open
    ws_message_burst: int = Field(default=20, ge=1)
    ws_messages_per_s: float = Field(default=10.0, gt=0)
    ws_start_run_burst: int = Field(default=5, ge=1)
    ws_start_runs_per_s: float = Field(default=2.0, gt=0)
    # usage records a user may post a minute (POST /api/analytics/usage; a fixed
    # window in Redis): 429 quota_exceeded with Retry-After beyond
    usage_records_per_minute: int = Field(default=20_000, ge=1)
    # request bodies, refused with 413 before anything parses them. The API's largest
    # is a run's input: 32,000 characters (bridge.protocol.RUN_INPUT_MAX_CHARS), up
    # to 12 bytes each when JSON-escaped as surrogate pairs (384 KB); a usage batch
    # of 10,000 records with every field at its longest is 3.0 MiB; the internal API
    # takes no bodies of its own
    max_body_bytes: int = Field(default=512 * 1024, ge=1024)
    usage_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    internal_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    dependency_timeout_s: float = 2.0
    redis_max_connections: int = 128
    startup_timeout_s: float = 60.0
    log_level: str = "info"
    # the service token of the internal API the agent workers call (None: no such API;
    # production requires one)
    internal_token: SecretStr | None = None

    def production_problems(self) -> Mapping[str, Iterable[str]]:
        token = self.internal_token.get_secret_value() if self.internal_token else None
        problems = {"database_url": url_password_problems(self.database_url),
                    "redis_url": url_password_problems(self.redis_url),
                    "ws_allowed_origins": origin_problems(self.ws_allowed_origins),
                    "internal_token": secret_problems(token)}
        if self.analytics_ingest:  # a replica that does not ingest never opens ClickHouse
            problems["clickhouse_url"] = clickhouse_url_problems(self.clickhouse_url)
        return problems
