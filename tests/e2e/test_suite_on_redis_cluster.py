"""The whole suite at smoke scale on a local Redis Cluster (three masters, a replica
each), through the code ``python -m e2e run --redis-cluster`` uses: every scenario
passes, and ``failure_recovery`` fails over the master of its user's slot in place
of restarting Redis, losing and doubling no event.

About 90 s on two cores. Needs a Redis 7+ server (Debian's ``redis-server``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from e2e.drivers import LocalDriver, Shape, StackDriver
from e2e.scenarios import SCENARIOS
from e2e.scenarios.suite import run_suite
from e2e.thresholds import load

pytestmark = pytest.mark.servers  # the suite starts its own stack


@pytest.mark.timeout(360)
def test_every_scenario_passes_on_a_redis_cluster_with_a_master_failed_over(
        redis7: Path, tmp_path: Path) -> None:
    lines: list[str] = []

    def make_driver(shape: Shape) -> StackDriver:
        return LocalDriver(shape, progress=lines.append, root=tmp_path / "stack",
                           redis_cluster=True)

    report = asyncio.run(run_suite(make_driver, list(SCENARIOS.values()), load("smoke"),
                                   tmp_path / "report", stack="local", progress=lines.append))
    failed = {r.name: r.failures + [f"{c.measure}={c.value} (limit {c.kind} {c.limit})"
                                    for c in r.checks if not c.passed]
              for r in report.results if not r.passed}
    assert failed == {}, "\n".join(lines[-60:])
    recovery = next(r for r in report.results if r.name == "failure_recovery")
    faults = [entry["fault"] for entry in recovery.timeline]
    assert "redis_failover" in faults and "redis_restart" not in faults
    assert all(entry["ok"] for entry in recovery.timeline), recovery.timeline
    assert recovery.metrics["redis_failover_recovery_ms"] > 0
    assert recovery.metrics["lost_events"] == 0
    assert recovery.metrics["duplicate_events"] == 0
    assert report.analytics.endswith("rows stored in ClickHouse table e2e_runs")
