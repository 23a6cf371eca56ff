"""Scenarios: what users do to the stack, every expectation checked and measured.

Each scenario is an ``async`` function of a :class:`Context` (the stack driver,
its settings from ``e2e/thresholds.toml``, the result it fills). They use only
the driver interface, so the same code runs on the local stack and on docker
compose. :data:`SCENARIOS` lists them in the order the suite runs them.
"""

from __future__ import annotations

from e2e.drivers import Shape
from e2e.scenarios.base import (
    PASSWORD,
    Context,
    Scenario,
    ScenarioResult,
    Target,
    unique_email,
)
from e2e.scenarios.flow import agent_flow, arithmetic_flow
from e2e.scenarios.load import load, load_needs
from e2e.scenarios.recovery import failure_recovery
from e2e.scenarios.replicas import NEEDS as REPLICA_NEEDS
from e2e.scenarios.replicas import multi_replica
from e2e.scenarios.users import concurrent_users

__all__ = ["PASSWORD", "SCENARIOS", "Context", "Scenario", "ScenarioResult", "Target",
           "arithmetic_flow", "unique_email"]

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("agent_flow", "the supervisor answers a fresh user's spend question with "
             "the figures of its own records", agent_flow),
    Scenario("concurrent_users", "many users at once, each with a marker nobody else may "
             "see", concurrent_users),
    Scenario("failure_recovery", "socket drop, backend kill -9, Redis restart, worker "
             "kill -9, auth down: each timed until service is back", failure_recovery,
             needs=lambda _: Shape(workers=2)),
    Scenario("load", "hundreds of runs streaming at once for a minute", load,
             needs=load_needs),
    Scenario("multi_replica", "two backends and two workers act as one; a killed "
             "backend's clients move to the other", multi_replica,
             needs=lambda _: REPLICA_NEEDS),
)}
