"""The sizing benchmark's pure parts: counter arithmetic and the deployment plan."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.sizing import (
    Assumptions,
    Measured,
    command_calls,
    commands_total,
    max_overlap,
    net,
    plan,
)

MEASURED = Measured(
    backend_cpu_ms_per_delivery=0.02, backend_rss_kib_per_socket=20.0,
    backend_idle_cpu_ms_per_s_per_1000_sockets=10.0, backend_base_rss_mib=100.0,
    backend_cpu_ms_per_run=10.0, worker_cpu_ms_per_run=5.0,
    worker_rss_kib_per_concurrent_run=10.0, worker_base_rss_mib=60.0,
    redis_commands_per_run=200.0, redis_cpu_ms_per_run=2.0, redis_bytes_per_event=400.0,
    redis_bytes_per_run_state=2000.0, postgres_xacts_per_run=4.0, postgres_cpu_ms_per_run=1.5,
    postgres_bytes_per_run=5000.0, analytics_rows_per_run=3.0, clickhouse_rows_per_s=50_000.0)


def test_commandstats_sums_every_command() -> None:
    stats = {"cmdstat_get": {"calls": 3, "usec": 10}, "cmdstat_evalsha": {"calls": 2},
             "errorstat_ERR": {"count": 1}}
    assert commands_total(stats) == 5
    assert command_calls(stats) == {"get": 3, "evalsha": 2}


def test_max_overlap_counts_runs_open_at_once() -> None:
    assert max_overlap([]) == 0
    assert max_overlap([(0, 2), (1, 3), (2, 4)]) == 2  # one ends as the next starts
    assert max_overlap([(0, 10), (1, 2), (3, 4), (3.5, 5)]) == 3
    assert max_overlap(iter([(0, 1), (2, 3), (4, 5)])) == 1  # as sizing passes them


def test_net_takes_the_background_off_and_never_goes_below_zero() -> None:
    assert net(100.0, 2.0, 10.0) == 80.0
    assert net(5.0, 2.0, 10.0) == 0.0


def test_plan_shows_each_step_and_follows_the_figures() -> None:
    steps = {s.what: s for s in plan(MEASURED, Assumptions())}
    assert steps["runs ending per second"].value == 5000
    assert steps["events emitted per second"].value == 200_000
    # 5,000 runs/s x 10 ms + 40,000 deliveries/s x 0.02 ms + 120 x 10 ms = 52 cores, x2
    assert steps["backend cores (CPU)"].value == pytest.approx(52.0)
    assert steps["backend pods"].value == 104
    assert steps["worker pods"].value == 50  # 25 cores by CPU, 20 by slots: x2
    assert "5,000 runs/s" in steps["Redis commands per second"].arithmetic
    # 18M runs a day over 100,000 users: 180 runs x 40 events, below the caps
    assert steps["events a history keeps"].value == 7200
    assert steps["ClickHouse ingesters at the measured rate"].value == 1
    assert all(s.value >= 0 and s.arithmetic for s in steps.values())

    heavier = plan(dataclasses.replace(MEASURED, backend_cpu_ms_per_run=20.0), Assumptions())
    assert {s.what: s for s in heavier}["backend pods"].value > steps["backend pods"].value


def test_a_history_never_holds_more_than_its_caps() -> None:
    busy = Assumptions(peak_hours_per_day=24)
    steps = {s.what: s for s in plan(MEASURED, busy)}
    assert steps["events a history keeps"].value == 10_000
    big_events = dataclasses.replace(MEASURED, redis_bytes_per_event=4096.0)
    steps = {s.what: s for s in plan(big_events, busy)}
    assert steps["events a history keeps"].value == 2048  # 8 MiB / 4 KiB
