"""The suite: start one stack shaped for the chosen scenarios, run them in turn,
judge each against the thresholds, write the report, and append one analytics
row per scenario to ClickHouse (``e2e_runs``) through the ingest stream.

The CLI (``python -m e2e run``) and the test of the suite (``tests/e2e``) both call
:func:`run_suite`, so what ``make test`` proves is what ``make e2e`` runs.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import httpx
from redis.asyncio import Redis

from bridge.ingest import append_rows
from e2e.drivers import Shape, StackDriver
from e2e.report import Report, write_report
from e2e.scenarios.base import Context, Scenario, ScenarioResult
from e2e.thresholds import Settings, judge
from servicekit.redisclient import make_redis
from servicekit.rediskeys import INGEST_GROUP, INGEST_STREAM, StreamShards

__all__ = ["SCENARIO_TIMEOUT_S", "run_suite", "shape_for"]

SCENARIO_TIMEOUT_S = 600.0
HEALTH_PROBES = 5


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shape_for(scenarios: list[Scenario], settings: Settings) -> Shape:
    """The smallest stack that fits every chosen scenario."""
    shape = Shape()
    for scenario in scenarios:
        shape = shape.union(scenario.needs(settings.section(scenario.name)))
    return shape


async def _stack_checks(driver: StackDriver, result: ScenarioResult) -> None:
    """Start times and health: every HTTP service answers /healthz and /readyz 200."""
    if driver.per_service_start and driver.start_timings:
        result.metrics["start_s"] = max(driver.start_timings.values())
    else:
        result.unmeasurable.append("start_s")
        result.notes.append(f"the {driver.kind} driver times the whole stack's start, not "
                            "each service's")
    for name, seconds in driver.start_timings.items():
        result.metrics[f"start_s.{name}"] = seconds
    async with httpx.AsyncClient(timeout=5) as http:
        for name, url in driver.http_services().items():
            alive = await http.get(f"{url}/healthz")
            result.expect(alive.status_code == 200, f"{name} /healthz answered "
                                                    f"{alive.status_code}")
            for _ in range(HEALTH_PROBES):
                started = time.monotonic()
                ready = await http.get(f"{url}/readyz")
                result.sample("health_check_ms", (time.monotonic() - started) * 1000)
                if not result.expect(ready.status_code == 200,
                                     f"{name} /readyz answered {ready.status_code}: "
                                     f"{ready.text[:300]}"):
                    break


async def _run_one(scenario: Scenario, driver: StackDriver, settings: Settings,
                   progress: Callable[[str], None]) -> ScenarioResult:
    result = ScenarioResult(scenario.name, started_at=_now())
    ctx = Context(driver, settings.section(scenario.name), result, progress)
    progress(f"{scenario.name}: {scenario.summary}")
    try:
        await asyncio.wait_for(scenario.run(ctx), SCENARIO_TIMEOUT_S)
    except TimeoutError:
        result.error(f"did not finish within {SCENARIO_TIMEOUT_S:.0f} s")
    except Exception as exc:
        result.error(f"stopped by {exc!r}")
        result.notes.append("".join(traceback.format_exception(exc))[-3000:])
    return _judged(result, settings, ctx.started)


def _judged(result: ScenarioResult, settings: Settings, started: float) -> ScenarioResult:
    result.duration_ms = (time.monotonic() - started) * 1000
    result.finish()
    result.checks = judge(settings.limits(result.name), result.metrics, result.unmeasurable)
    return result


def _secrets_in_logs(driver: StackDriver, logs: list[Path]) -> ScenarioResult:
    """Every secret the stack was given, looked for in every line its services
    logged during the run: none may appear."""
    result = ScenarioResult("logs", started_at=_now())
    given = driver.secrets()
    result.expect(bool(given), f"the {driver.kind} driver names no secret to look for")
    lines = 0
    for path in logs:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            lines += 1
            for name, value in given.items():
                result.expect(value not in line, f"{name} appears in {path.name}:{number}")
    result.expect(lines > 0, "the services logged nothing to scan")
    result.metrics["log_lines_scanned"] = lines
    result.metrics["secrets_looked_for"] = len(given)
    return result


def _say_result(result: ScenarioResult, progress: Callable[[str], None]) -> None:
    verdict = "passed" if result.passed else "FAILED"
    failed = [f"{c.measure}={'—' if c.value is None else f'{c.value:g}'} (limit {c.kind} "
              f"{c.limit:g})" for c in result.checks if not c.passed]
    progress(f"{result.name} {verdict} in {result.duration_ms / 1000:.1f} s"
             + (f"; over the limit: {', '.join(failed)}" if failed else ""))
    for failure in result.failures[:10]:
        progress(f"  - {failure}")
    if len(result.failures) > 10:
        progress(f"  - … {len(result.failures) - 10} more in the report")


async def _store_rows(driver: StackDriver, report: Report) -> str:
    """Append the report's rows to the ingest stream and wait (a little) until the
    ClickHouse owner inserted them, so a stack torn down next has them stored."""
    redis = make_redis(driver.redis_url, cluster=driver.redis_cluster)
    shards = StreamShards.of(INGEST_STREAM, cluster=driver.redis_cluster).keys
    try:
        await append_rows(redis, "e2e_runs", report.analytics_rows())
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if all([await _consumed(redis, stream) for stream in shards]):
                return f"{len(report.results)} rows stored in ClickHouse table e2e_runs"
            await asyncio.sleep(0.2)
        return f"{len(report.results)} rows queued for e2e_runs (not inserted within 15 s)"
    except Exception as exc:
        return f"rows for e2e_runs not written: {exc!r}"
    finally:
        await redis.aclose()


async def _consumed(redis: Redis, stream: str) -> bool:
    """Whether the ingester has read and acknowledged every entry of ``stream``."""
    if not await redis.exists(stream):
        return True
    last = (await redis.xinfo_stream(stream))["last-generated-id"]
    group = next((g for g in await redis.xinfo_groups(stream)
                  if g["name"] in (INGEST_GROUP, INGEST_GROUP.encode())), None)
    return bool(group is not None and group["pending"] == 0
                and group["last-delivered-id"] == last)


async def run_suite(make_driver: Callable[[Shape], StackDriver], scenarios: list[Scenario],
                    settings: Settings, report_dir: Path, *, stack: str,
                    progress: Callable[[str], None] = lambda _: None) -> Report:
    """Run ``scenarios`` on a fresh stack; write and return the report."""
    run_id = f"e2e_{datetime.now(UTC):%Y%m%dT%H%M%S}_{secrets.token_hex(3)}"
    shape = shape_for(scenarios, settings)
    report = Report(run_id=run_id, started_at=_now(), finished_at="", stack=stack,
                    scale=settings.scale, shape=asdict(shape), memory_source=None,
                    settings=settings.as_dict(), start_timings={}, results=[])
    progress(f"run {run_id}: {len(scenarios)} scenarios at {settings.scale} scale on "
             f"{stack} ({shape.backends} backends, {shape.workers} workers)")
    driver = make_driver(shape)
    report.memory_source = driver.memory_source
    report.shape = asdict(driver.shape)
    stack_result = ScenarioResult("stack", started_at=_now())
    started = time.monotonic()
    try:
        try:
            driver.start()
        except Exception as exc:
            stack_result.error(f"the stack did not start: {exc}")
            report.results.append(_judged(stack_result, settings, started))
            _say_result(stack_result, progress)
            return report
        report.start_timings = dict(driver.start_timings)
        await _stack_checks(driver, stack_result)
        report.results.append(_judged(stack_result, settings, started))
        _say_result(stack_result, progress)
        for scenario in scenarios:
            result = await _run_one(scenario, driver, settings, progress)
            report.results.append(result)
            _say_result(result, progress)
        report.finished_at = _now()
        report.analytics = await _store_rows(driver, report)
        progress(report.analytics)
        logs = driver.collect_logs(report_dir / "logs")
        report.notes.append(f"service logs: {', '.join(str(p) for p in logs)}")
        result = _secrets_in_logs(driver, logs)
        report.results.append(_judged(result, settings, time.monotonic()))
        _say_result(result, progress)
    finally:
        report.finished_at = report.finished_at or _now()
        driver.stop()
        write_report(report, report_dir)
    return report
