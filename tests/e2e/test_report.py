"""The report writer: the JSON round-trips, the Markdown summarises, and the HTML
is one offline page with the charts and the pass/fail table."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from e2e import charts
from e2e.report import Report, render_html, render_markdown, write_report
from e2e.scenarios import ScenarioResult
from e2e.thresholds import Check


def _report() -> Report:
    load = ScenarioResult(
        "load", metrics={"events_per_s": 1250.3, "p95_response_ms": 1762.7,
                         "rss_growth_mb": 24.7, "errors": 0},
        samples={"response_ms": [10.0, 12.5, 30.0, 31.0, 900.0],
                 "event_latency_ms": [1.0, 2.0, 3.0, 4.0]},
        series={"events_per_s": [(0.0, 900.0), (1.0, 1250.0), (2.0, 1251.0)],
                "rss_mb:backend": [(0.0, 120.0), (1.0, 121.5)],
                "rss_mb:worker": [(0.0, 90.0), (1.0, 91.0)]},
        checks=[Check("events_per_s", "min", 1000, 1250.3, True, "100+ events/s"),
                Check("rss_growth_mb", "max", 50, 24.7, True, "< 100 MB")],
        notes=["memory: /proc"], started_at="2026-11-25T16:00:00.000Z", duration_ms=91_400)
    recovery = ScenarioResult(
        "failure_recovery", failures=["backend_kill: 3 of 603 events never arrived <b>"],
        metrics={"backend_kill_recovery_ms": 6100.0},
        timeline=[{"fault": "socket_drop", "at_s": 0.5, "recovered_s": 0.52,
                   "duration_ms": 20.0, "ok": True, "attempts": 1},
                  {"fault": "backend_kill", "at_s": 5.9, "ok": False, "detail": "never"}],
        checks=[Check("backend_kill_recovery_ms", "max", 5000, 6100.0, False, "< 30 s"),
                Check("rss_growth_mb", "max", 50, None, True, "", "not available")])
    return Report(run_id="e2e_test", started_at="2026-11-25T16:00:00.000Z",
                  finished_at="2026-11-25T16:03:00.000Z", stack="local", scale="full",
                  shape={"backends": 2, "workers": 2, "worker_concurrency": 110},
                  memory_source="/proc", settings={"source": "e2e/thresholds.toml",
                                                   "tables": {"load": {"min_events_per_s": 1000}}},
                  start_timings={"postgres": 1.2, "backend-1": 3.4},
                  results=[load, recovery], analytics="2 rows stored")


def test_json_round_trips() -> None:
    report = _report()
    again = Report.from_json(report.to_json())
    assert again == report
    data = json.loads(report.to_json())
    assert data["passed"] is False
    assert [r["passed"] for r in data["results"]] == [True, False]


def test_the_three_files(tmp_path: Path) -> None:
    paths = write_report(_report(), tmp_path / "out")
    assert sorted(p.name for p in paths) == ["report.html", "report.json", "report.md"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_markdown_summarises_verdicts_checks_and_failures() -> None:
    text = render_markdown(_report())
    assert text.startswith("# End-to-end report: FAILED")
    assert "| load | pass | 91.4 s | 0 | — |" in text
    assert "| failure_recovery | **FAIL** |" in text
    assert "| backend_kill_recovery_ms | 6,100 | ≤ 5000 | < 30 s | FAIL |" in text
    assert "| rss_growth_mb | — | ≤ 50 | — | pass (not available) |" in text
    assert "- backend_kill: 3 of 603 events never arrived <b>" in text
    assert "- backend_kill: at 5.9 s, NOT back (never)" in text


def test_html_is_one_offline_page_with_charts_and_the_table() -> None:
    html = render_html(_report())
    assert "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    titles = re.findall(r'<svg [^>]*aria-label="([^"]+)"', html)
    assert "load: response_ms" in titles  # latency histogram
    assert "load: events received per second" in titles
    assert "load: resident memory per service" in titles
    assert "failure_recovery: timeline" in titles  # faults and recoveries
    assert "<th>scenario</th><th>measure</th><th>value</th><th>limit</th>" in html
    assert '<td class="fail">FAIL</td>' in html
    assert "&lt;b&gt;" in html and "<b>" not in html  # text is escaped
    for svg in re.findall(r"<svg .*?</svg>", html, re.S):
        ET.fromstring(svg)  # each chart is well-formed XML


def test_charts_without_values_say_so() -> None:
    assert "no values" in charts.histogram([], title="empty")
    assert "no values" in charts.lines({}, title="empty")
    assert "no faults" in charts.timeline([], title="empty")
    one = charts.histogram([5.0], title="one value")
    ET.fromstring(one)
    limit = charts.lines({"a": [(0, 1), (1, 2)]}, title="t", limit=1.5, limit_label="min")
    assert "stroke-dasharray" in limit and ">min<" in limit


def test_analytics_rows_one_per_scenario() -> None:
    rows = _report().analytics_rows()
    assert [(r["scenario"], r["passed"]) for r in rows] == [("load", True),
                                                            ("failure_recovery", False)]
    assert json.loads(rows[0]["metrics"])["events_per_s"] == 1250.3
    assert rows[0]["duration_ms"] == 91_400 and rows[0]["stack"] == "local"
