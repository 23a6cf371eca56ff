"""The bridge's state machine and its adapter, with a fake clock (no sockets, no Redis)."""

from __future__ import annotations

import asyncio

import pytest

from bridge.integration import AgentWebSocketBridge
from bridge.machine import BridgeMachine, BridgeState, Transition

S = BridgeState


def test_every_transition() -> None:
    machine = BridgeMachine(max_attempts=3, base_delay_s=1, max_delay_s=4)
    assert machine.state == S.UNINITIALIZED and not machine.ready
    assert machine.probe_failed(0, "early") is None  # nothing to degrade yet
    assert machine.begin_init(0) and machine.state == S.INITIALIZING
    assert not machine.begin_init(0)  # a second caller does not initialise
    machine.init_done(1, ok=True)
    assert machine.state == S.ACTIVE and machine.ready and machine.due(1)
    machine.probe_failed(2, "redis down")
    assert machine.state == S.DEGRADED and machine.ready
    assert machine.retry_at == 3 and not machine.due(2.5) and machine.due(3)
    machine.probe_failed(3, "still down")  # attempt 1
    assert machine.state == S.DEGRADED and machine.retry_at == 5
    machine.probe_failed(5, "still down")  # attempt 2
    machine.probe_failed(9, "still down")  # attempt 3 = max: FAILED
    assert machine.state == S.FAILED and not machine.ready
    machine.probe_failed(13, "still down")
    assert machine.state == S.FAILED and machine.retry_at == 17  # keeps retrying at the cap
    machine.probe_ok(17)
    assert machine.state == S.ACTIVE and machine.attempts == 0 and machine.retry_at is None
    assert [(t.before, t.after) for t in machine.transitions] == [
        (S.UNINITIALIZED, S.INITIALIZING), (S.INITIALIZING, S.ACTIVE), (S.ACTIVE, S.DEGRADED),
        (S.DEGRADED, S.FAILED), (S.FAILED, S.ACTIVE)]


def test_a_failed_initialisation_degrades_and_retries() -> None:
    machine = BridgeMachine(base_delay_s=0.5)
    machine.begin_init(0)
    machine.init_done(0, ok=False, reason="no redis")
    assert machine.state == S.DEGRADED and machine.retry_at == 0.5
    machine.probe_ok(0.5)
    assert machine.state == S.ACTIVE


def test_recovery_from_degraded() -> None:
    machine = BridgeMachine()
    machine.begin_init(0)
    machine.init_done(0, ok=True)
    machine.probe_failed(1, "blip")
    machine.probe_ok(1.2)
    assert machine.state == S.ACTIVE


def test_backoff_doubles_and_is_capped() -> None:
    machine = BridgeMachine(base_delay_s=0.1, max_delay_s=5)
    assert [machine.delay(n) for n in range(9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5, 5, 5]


def test_init_done_outside_initialising_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        BridgeMachine().init_done(0, ok=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_ensure_integration_initialises_once() -> None:
    calls = 0

    async def initialize() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)

    async def probe() -> None:
        return None

    bridge = AgentWebSocketBridge(initialize=initialize, probe=probe, clock=FakeClock())
    states = await asyncio.gather(*(bridge.ensure_integration() for _ in range(100)))
    assert calls == 1 and set(states) == {S.ACTIVE}
    assert await bridge.ensure_integration() == S.ACTIVE and calls == 1


async def test_the_monitor_walks_the_machine_and_reports_recovery() -> None:
    clock = FakeClock()
    healthy = True
    recovered: list[float] = []
    seen: list[Transition] = []

    async def probe() -> None:
        if not healthy:
            raise ConnectionError("redis down")

    async def initialize() -> None:
        return None

    bridge = AgentWebSocketBridge(
        initialize=initialize, probe=probe, clock=clock, on_transition=seen.append,
        on_recovered=lambda: recovered.append(clock.now),
        machine=BridgeMachine(max_attempts=2, base_delay_s=1, max_delay_s=2))
    await bridge.ensure_integration()
    healthy = False
    await bridge.check()
    assert bridge.state == S.DEGRADED
    clock.now = 0.5
    await bridge.check()  # not due yet: no probe, no change
    assert bridge.machine.attempts == 0
    for clock.now in (1.0, 3.0):
        await bridge.check()
    assert bridge.state == S.FAILED
    healthy = True
    clock.now = 5.0
    await bridge.check()
    assert bridge.state == S.ACTIVE and recovered == [5.0]
    assert [t.after for t in seen] == [S.INITIALIZING, S.ACTIVE, S.DEGRADED, S.FAILED, S.ACTIVE]
