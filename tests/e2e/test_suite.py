"""The whole suite at smoke scale on a fresh local stack, through the code
``python -m e2e run`` uses: every scenario passes, the three report files are
written, and one row per scenario lands in ClickHouse's ``e2e_runs``.

About two minutes on two cores (the full scale is ``make e2e``).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import clickhouse_connect
import pytest

from e2e.drivers import LocalDriver, Shape, StackDriver
from e2e.report import Report
from e2e.scenarios import SCENARIOS
from e2e.scenarios.suite import run_suite
from e2e.thresholds import load

pytestmark = pytest.mark.servers  # the suite starts its own stack


@pytest.mark.timeout(300)
def test_every_scenario_passes_at_smoke_scale(tmp_path: Path) -> None:
    root, report_dir = tmp_path / "stack", tmp_path / "report"
    lines: list[str] = []

    def make_driver(shape: Shape) -> StackDriver:
        return LocalDriver(shape, progress=lines.append, root=root)

    started = time.monotonic()
    report = asyncio.run(run_suite(make_driver, list(SCENARIOS.values()), load("smoke"),
                                   report_dir, stack="local", progress=lines.append))
    elapsed = time.monotonic() - started
    failed = {r.name: r.failures + [f"{c.measure}={c.value} (limit {c.kind} {c.limit})"
                                    for c in r.checks if not c.passed]
              for r in report.results if not r.passed}
    assert failed == {}, "\n".join(lines[-60:])
    assert [r.name for r in report.results] == ["stack", *SCENARIOS, "logs"]
    assert elapsed < 300
    for name in ("report.json", "report.md", "report.html"):
        assert (report_dir / name).stat().st_size > 0
    again = Report.from_json((report_dir / "report.json").read_text())
    assert again.passed and again.run_id == report.run_id
    assert report.analytics.endswith("rows stored in ClickHouse table e2e_runs")

    # the stack is down: its chDB data can be opened here and read back
    client = clickhouse_connect.get_client(dsn=f"chdb://{root / 'clickhouse'}")
    rows = client.query("SELECT scenario, passed, metrics FROM agentchat.e2e_runs "
                        "WHERE run_id = {id:String} ORDER BY scenario",
                        parameters={"id": report.run_id}).result_rows
    # every result but the log scan, which runs once the rows are stored
    assert [(scenario, passed) for scenario, passed, _ in rows] == sorted(
        (r.name, True) for r in report.results if r.name != "logs")
    metrics = {scenario: json.loads(text) for scenario, _, text in rows}
    assert metrics["load"]["delivery_rate"] == 1.0
