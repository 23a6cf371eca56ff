"""The suite's report: ``report.json`` (everything, machine-readable, round-trips),
``report.md`` (the summary a reviewer reads in a pull request) and
``report.html`` (one self-contained page with the charts), plus the rows of the
``e2e_runs`` analytics table.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from e2e import charts
from e2e.scenarios.base import ScenarioResult
from e2e.thresholds import Check

__all__ = ["Report", "write_report"]

#: the metrics each scenario shows first (the rest follow, sorted)
HEADLINE = ("success_rate", "isolation_violations", "delivery_rate", "events_per_s",
            "steady_s", "events_sent", "events_received", "p95_run_ms", "p95_response_ms",
            "p95_execution_ms", "p95_event_latency_ms", "p95_ws_connect_ms", "failover_ms",
            "rss_growth_mb", "tools_executed", "recovery_attempts", "errors")


@dataclass
class Report:
    run_id: str
    started_at: str
    finished_at: str
    stack: str
    scale: str
    shape: dict[str, int]
    memory_source: str | None
    settings: dict[str, Any]
    start_timings: dict[str, float]
    results: list[ScenarioResult]
    analytics: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for result, raw in zip(self.results, data["results"], strict=True):
            raw["passed"] = result.passed
        data["passed"] = self.passed
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        results = []
        for raw in data["results"]:
            raw = {k: v for k, v in raw.items() if k != "passed"}
            raw["checks"] = [Check(**c) for c in raw.get("checks", [])]
            raw["series"] = {k: [(float(x), float(y)) for x, y in v]
                             for k, v in raw.get("series", {}).items()}
            results.append(ScenarioResult(**raw))
        fields = {k: v for k, v in data.items() if k not in ("passed", "results")}
        return cls(results=results, **fields)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> Report:
        return cls.from_dict(json.loads(text))

    def analytics_rows(self) -> list[dict[str, Any]]:
        """One ``e2e_runs`` row per scenario: a team trends these over time."""
        return [{"run_id": self.run_id, "started_at": r.started_at or self.started_at,
                 "stack": self.stack, "scale": self.scale, "scenario": r.name,
                 "passed": r.passed, "duration_ms": int(r.duration_ms),
                 "metrics": json.dumps({k: v for k, v in r.metrics.items()
                                        if not math.isnan(v)}, sort_keys=True)}
                for r in self.results]


def _value(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e12:
        return f"{int(value):,}"
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"


def _ordered_metrics(result: ScenarioResult) -> list[tuple[str, float]]:
    first = [(k, result.metrics[k]) for k in HEADLINE if k in result.metrics]
    rest = sorted((k, v) for k, v in result.metrics.items() if k not in HEADLINE)
    return first + rest


def _check_row(check: Check) -> tuple[str, str, str, str, str]:
    verdict = "pass" if check.passed else "FAIL"
    if check.value is None:
        verdict += f" ({check.note})"
    limit = f"{'≤' if check.kind == 'max' else '≥'} {check.limit:g}"
    return check.measure, _value(check.value), limit, check.original or "—", verdict


# -- Markdown ------------------------------------------------------------------------
def render_markdown(report: Report) -> str:
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [f"# End-to-end report: {verdict}", "",
             f"- run `{report.run_id}`, {report.started_at} → {report.finished_at}",
             f"- stack `{report.stack}` ({report.shape.get('backends')} backends, "
             f"{report.shape.get('workers')} workers), scale `{report.scale}`",
             f"- thresholds: `{report.settings.get('source', '?')}`",
             f"- memory: {report.memory_source or 'not available from this driver'}",
             f"- analytics: {report.analytics or 'not written'}",
             *[f"- {note}" for note in report.notes], ""]
    lines += ["| scenario | verdict | duration | failures | checks failed |",
              "| --- | --- | --- | --- | --- |"]
    for result in report.results:
        failed = [c.measure for c in result.checks if not c.passed]
        lines.append(f"| {result.name} | {'pass' if result.passed else '**FAIL**'} | "
                     f"{result.duration_ms / 1000:.1f} s | {len(result.failures)} | "
                     f"{', '.join(failed) or '—'} |")
    if report.start_timings:
        lines += ["", "Service start to ready: " + ", ".join(
            f"{name} {seconds:.1f} s" for name, seconds in report.start_timings.items())]
    for result in report.results:
        lines += ["", f"## {result.name}: {'pass' if result.passed else 'FAIL'}", ""]
        if result.checks:
            lines += ["| measure | value | limit | original | verdict |",
                      "| --- | --- | --- | --- | --- |"]
            lines += ["| " + " | ".join(_check_row(c)) + " |" for c in result.checks]
            lines.append("")
        if result.failures:
            lines += ["Failures:", ""] + [f"- {f}" for f in result.failures[:50]]
            if len(result.failures) > 50:
                lines.append(f"- … and {len(result.failures) - 50} more (report.json)")
            lines.append("")
        for entry in result.timeline:
            took = entry.get("duration_ms")
            lines.append(f"- {entry['fault']}: at {entry['at_s']:.1f} s, "
                         + (f"{took:,.0f} ms until {entry['recovered_s']:.1f} s"
                            if took is not None else "NOT back")
                         + (f" ({entry['detail']})" if entry.get("detail") else ""))
        if result.timeline:
            lines.append("")
        lines += [f"- {note}" for note in result.notes]
        measures = ", ".join(f"{k} {_value(v)}" for k, v in _ordered_metrics(result))
        lines += ["", f"Measures: {measures}"]
    return "\n".join(lines) + "\n"


# -- HTML ----------------------------------------------------------------------------
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#111827}
h1 .pass,td.pass{color:#15803d} h1 .fail,td.fail{color:#b91c1c;font-weight:600}
table{border-collapse:collapse;margin:.5rem 0 1rem} td,th{border:1px solid #d1d5db;
padding:.25rem .5rem;text-align:left;font-size:.9rem} th{background:#f3f4f6}
td.num{text-align:right;font-variant-numeric:tabular-nums} .charts{display:flex;
flex-wrap:wrap;gap:1rem} section{border-top:2px solid #e5e7eb;margin-top:1.5rem}
code{background:#f3f4f6;padding:0 .2rem} details{margin:.5rem 0}
"""


def _table(head: list[str], rows: list[list[str]], classes: list[list[str]] | None = None
           ) -> str:
    out = ["<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for index, row in enumerate(rows):
        cells = []
        for column, cell in enumerate(row):
            css = classes[index][column] if classes else ""
            cells.append(f'<td class="{css}">{escape(cell)}</td>' if css
                         else f"<td>{escape(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table>"


def _charts(result: ScenarioResult, report: Report) -> list[str]:
    out = []
    for name, values in sorted(result.samples.items()):
        if name.endswith("_ms") and len(values) > 1:
            out.append(charts.histogram(values, title=f"{result.name}: {name}", unit="ms"))
    if "events_per_s" in result.series:
        limit = report.settings.get("tables", {}).get(result.name, {}).get("min_events_per_s")
        out.append(charts.lines({"received": result.series["events_per_s"]},
                                title=f"{result.name}: events received per second",
                                y_label="events/s", limit=limit,
                                limit_label=f"min {limit}/s" if limit else ""))
    rss = {k.split(":", 1)[1]: v for k, v in result.series.items() if k.startswith("rss_mb:")}
    if rss:
        out.append(charts.lines(rss, title=f"{result.name}: resident memory per service",
                                y_label="MB"))
    if result.timeline:
        out.append(charts.timeline(result.timeline, title=f"{result.name}: timeline"))
    return out


def render_html(report: Report) -> str:
    verdict = "PASSED" if report.passed else "FAILED"
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>"
             f"e2e {verdict} {escape(report.run_id)}</title><style>{_STYLE}</style></head>"
             f"<body><h1>End-to-end report: <span class='{'pass' if report.passed else 'fail'}'"
             f">{verdict}</span></h1>",
             f"<p>Run <code>{escape(report.run_id)}</code>, {escape(report.started_at)} → "
             f"{escape(report.finished_at)}; stack <code>{escape(report.stack)}</code> with "
             f"{report.shape.get('backends')} backends and {report.shape.get('workers')} "
             f"workers; scale <code>{escape(report.scale)}</code>; thresholds from "
             f"<code>{escape(str(report.settings.get('source', '?')))}</code>.</p>",
             f"<p>Memory: {escape(report.memory_source or 'not available from this driver')}"
             f". Analytics: {escape(report.analytics or 'not written')}.</p>",
             *[f"<p>{escape(note)}</p>" for note in report.notes]]
    rows, classes = [], []
    for result in report.results:
        for check in result.checks:
            row = [result.name, *_check_row(check)]
            rows.append(row)
            classes.append(["", "", "num", "num", "", "pass" if check.passed else "fail"])
        if result.failures:
            rows.append([result.name, "checks of behaviour", str(len(result.failures)),
                         "0 failures", "—", "FAIL"])
            classes.append(["", "", "num", "", "", "fail"])
    parts += ["<h2>Pass / fail</h2>",
              _table(["scenario", "measure", "value", "limit", "original", "verdict"],
                     rows, classes)]
    if report.start_timings:
        parts += ["<h2>Services: start to ready</h2>", _table(
            ["service", "seconds"],
            [[name, f"{seconds:.2f}"] for name, seconds in report.start_timings.items()])]
    for result in report.results:
        state = "pass" if result.passed else "fail"
        parts.append(f"<section><h2>{escape(result.name)}: <span class='{state}'>"
                     f"{state.upper()}</span> ({result.duration_ms / 1000:.1f} s)</h2>")
        if result.failures:
            parts.append("<ul>" + "".join(f"<li>{escape(f)}</li>"
                                          for f in result.failures[:100]) + "</ul>")
        parts += [f"<p>{escape(note)}</p>" for note in result.notes]
        parts.append("<div class='charts'>" + "".join(_charts(result, report)) + "</div>")
        parts.append("<details><summary>all measures</summary>" + _table(
            ["measure", "value"], [[k, _value(v)] for k, v in _ordered_metrics(result)],
            [["", "num"] for _ in result.metrics]) + "</details></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: Report, directory: Path) -> list[Path]:
    """Write the three files; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {"report.json": report.to_json(), "report.md": render_markdown(report),
             "report.html": render_html(report)}
    paths = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths
