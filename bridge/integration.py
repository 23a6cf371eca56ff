"""AgentWebSocketBridge: the asyncio adapter around :class:`BridgeMachine`.

It owns the backend's link to the event path (Redis and the fan-out hub):
``ensure_integration()`` brings it up once however many callers ask at the same
time; ``monitor()`` probes it and walks the state machine; when the link comes
back after an outage it tells the hub, whose sockets then fill what they missed
from the users' histories.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bridge.machine import BridgeMachine, BridgeState, Transition

__all__ = ["AgentWebSocketBridge"]

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[None]]


class AgentWebSocketBridge:
    def __init__(
        self,
        *,
        initialize: Probe,
        probe: Probe,
        on_recovered: Callable[[], None] = lambda: None,
        on_transition: Callable[[Transition], None] = lambda _: None,
        machine: BridgeMachine | None = None,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._initialize = initialize
        self._probe = probe
        self._on_recovered = on_recovered
        self._on_transition = on_transition
        self.machine = machine or BridgeMachine()
        self._interval_s = interval_s
        self._clock = clock
        self._sleep = sleep
        self._init: asyncio.Future[None] | None = None

    @property
    def state(self) -> BridgeState:
        return self.machine.state

    def _record(self, transition: Transition | None) -> None:
        if transition is None:
            return
        level = logging.INFO if transition.after == BridgeState.ACTIVE else logging.WARNING
        log.log(level, "bridge %s -> %s (%s)", transition.before, transition.after,
                transition.reason)
        self._on_transition(transition)
        if transition.after == BridgeState.ACTIVE and transition.before in (
                BridgeState.DEGRADED, BridgeState.FAILED):
            self._on_recovered()

    async def ensure_integration(self) -> BridgeState:
        """Initialise once (single flight); later calls return the current state."""
        if self._init is None:
            self._init = asyncio.ensure_future(self._run_init())
        await asyncio.shield(self._init)
        return self.state

    async def _run_init(self) -> None:
        if not self.machine.begin_init(self._clock()):
            return
        self._record(self.machine.transitions[-1])
        try:
            await self._initialize()
        except Exception as exc:
            self._record(self.machine.init_done(self._clock(), ok=False, reason=repr(exc)))
        else:
            self._record(self.machine.init_done(self._clock(), ok=True))

    async def check(self) -> None:
        """One beat of the health monitor: probe when due, move the machine."""
        now = self._clock()
        if not self.machine.due(now):
            return
        try:
            await self._probe()
        except Exception as exc:
            self._record(self.machine.probe_failed(self._clock(), repr(exc)[:200]))
        else:
            self._record(self.machine.probe_ok(self._clock()))

    async def monitor(self) -> None:
        await self.ensure_integration()
        while True:
            await self._sleep(self._interval_s)
            await self.check()
