"""The AgentWebSocketBridge's state machine: no I/O, time passed in.

    UNINITIALIZED → INITIALIZING → ACTIVE ⇄ DEGRADED → FAILED
                                     ▲                   │
                                     └── probe ok ───────┘

A failed probe moves ACTIVE to DEGRADED and schedules a retry; each failed retry
doubles the delay up to ``max_delay_s``. After ``max_attempts`` failed retries the
bridge is FAILED (not ready) and keeps retrying at the cap. A good probe from
DEGRADED or FAILED returns to ACTIVE. A failed initialisation counts as the
first failed probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["BridgeMachine", "BridgeState", "Transition"]


class BridgeState(StrEnum):
    UNINITIALIZED = "UNINITIALIZED"
    INITIALIZING = "INITIALIZING"
    ACTIVE = "ACTIVE"
    DEGRADED = "DEGRADED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Transition:
    before: BridgeState
    after: BridgeState
    reason: str
    at: float


@dataclass
class BridgeMachine:
    max_attempts: int = 5
    base_delay_s: float = 0.1
    max_delay_s: float = 5.0
    state: BridgeState = BridgeState.UNINITIALIZED
    attempts: int = 0
    retry_at: float | None = None
    transitions: list[Transition] = field(default_factory=list)

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (0-based), capped."""
        return float(min(self.base_delay_s * 2 ** attempt, self.max_delay_s))

    def _go(self, state: BridgeState, reason: str, now: float) -> Transition | None:
        if state == self.state:
            return None
        transition = Transition(self.state, state, reason, now)
        self.state = state
        self.transitions.append(transition)
        return transition

    def begin_init(self, now: float) -> bool:
        """True when the caller should initialise (the first caller only)."""
        if self.state != BridgeState.UNINITIALIZED:
            return False
        self._go(BridgeState.INITIALIZING, "ensure_integration", now)
        return True

    def init_done(self, now: float, *, ok: bool, reason: str = "") -> Transition | None:
        if self.state != BridgeState.INITIALIZING:
            raise RuntimeError(f"init_done in state {self.state}")
        if ok:
            self.attempts, self.retry_at = 0, None
            return self._go(BridgeState.ACTIVE, "initialised", now)
        self.attempts, self.retry_at = 1, now + self.delay(0)
        return self._go(BridgeState.DEGRADED, f"initialisation failed: {reason}", now)

    def probe_ok(self, now: float) -> Transition | None:
        if self.state in (BridgeState.UNINITIALIZED, BridgeState.INITIALIZING):
            return None
        self.attempts, self.retry_at = 0, None
        return self._go(BridgeState.ACTIVE, "probe ok", now)

    def probe_failed(self, now: float, reason: str) -> Transition | None:
        if self.state in (BridgeState.UNINITIALIZED, BridgeState.INITIALIZING):
            return None
        if self.state == BridgeState.ACTIVE:
            self.attempts, self.retry_at = 0, now + self.delay(0)
            return self._go(BridgeState.DEGRADED, reason, now)
        self.attempts += 1
        self.retry_at = now + self.delay(self.attempts)
        if self.attempts >= self.max_attempts:
            return self._go(BridgeState.FAILED, f"{self.attempts} recoveries failed: {reason}",
                            now)
        return None

    def due(self, now: float) -> bool:
        """Whether a probe is due (always while ACTIVE: the health monitor's beat)."""
        return self.retry_at is None or now >= self.retry_at

    @property
    def ready(self) -> bool:
        return self.state in (BridgeState.ACTIVE, BridgeState.DEGRADED)
