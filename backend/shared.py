"""What the backend's handlers share: built once at start, handed down."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis

from backend.admission import SocketAdmission
from backend.analytics import AnalyticsStore
from backend.approvals import RunApprovals
from backend.config import BackendSettings
from backend.runs import RunTransitions
from backend.store import Store
from backend.tokens import TokenVerifier
from bridge.fanout import UserEventHub
from bridge.integration import AgentWebSocketBridge
from bridge.streams import UserStreams

__all__ = ["BackendState"]


@dataclass(frozen=True)
class BackendState:
    settings: BackendSettings
    pool: asyncpg.Pool
    redis: Redis
    verifier: TokenVerifier
    store: Store
    runs: RunTransitions
    approvals: RunApprovals
    analytics: AnalyticsStore | None  # None on a replica that does not own ClickHouse
    hub: UserEventHub
    bridge: AgentWebSocketBridge
    streams: UserStreams
    admission: SocketAdmission
