"""The suite's settings: the file's defaults, smoke overrides, E2E_* variables, and
the verdict computed from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.scenarios import SCENARIOS
from e2e.thresholds import Limit, Settings, ThresholdError, judge, load


def test_the_shipped_file_has_every_scenario_and_the_documented_defaults() -> None:
    full = load("full", env={})
    assert set(SCENARIOS) | {"stack", "all"} == set(full.tables)
    assert full.section("load")["runs"] == 200
    assert full.section("load")["min_events_per_s"] == 1000
    assert full.section("concurrent_users")["users"] == 50
    assert full.section("agent_flow")["max_p95_run_ms"] == 2000
    assert full.section("failure_recovery")["max_backend_kill_recovery_ms"] == 5000
    assert full.section("load")["max_rss_growth_mb"] == 50


def test_every_original_figure_belongs_to_a_setting() -> None:
    full = load("full", env={})
    for key in full.original:
        table, name = key.split(".", 1)
        assert name in full.tables[table], f"[original] {key} names no setting"
    assert full.original["load.min_events_per_s"] == "100+ events/s"


def test_smoke_overrides_only_what_it_names() -> None:
    smoke = load("smoke", env={})
    assert smoke.section("load")["runs"] == 40
    assert smoke.section("load")["min_events_per_s"] == 100
    assert smoke.section("load")["max_p95_response_ms"] == 3000  # not overridden
    assert smoke.scale == "smoke"


def test_environment_overrides_win() -> None:
    settings = load("smoke", env={"E2E_LOAD__MIN_EVENTS_PER_S": "80",
                                  "E2E_ALL__MAX_ERRORS": "2", "UNRELATED": "x",
                                  "E2E_NOT_A_SETTING": "1"})
    assert settings.section("load")["min_events_per_s"] == 80
    assert [lim.value for lim in settings.limits("load") if lim.key == "max_errors"] == [2.0]


@pytest.mark.parametrize(("variable", "message"), [
    ("E2E_LAOD__RUNS", r"no table \[laod\]"),
    ("E2E_LOAD__RUN", "has no key 'run'"),
])
def test_a_misspelt_variable_is_an_error(variable: str, message: str) -> None:
    with pytest.raises(ThresholdError, match=message):
        load("full", env={variable: "1"})


def test_a_limit_must_be_a_number(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[load]\nmax_p95_response_ms = "fast"\n')
    with pytest.raises(ThresholdError, match="must be a number"):
        load("full", path, env={})
    path.write_text("[load\n")
    with pytest.raises(ThresholdError, match=str(path)):
        load("full", path, env={})


def test_limits_of_a_scenario_include_the_shared_ones_it_does_not_override(
        tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("[all]\nmax_errors = 0\nmax_p95_ws_connect_ms = 2000\n"
                    "[load]\nusers = 3\nmax_p95_ws_connect_ms = 500\nmin_delivery_rate = 1.0\n"
                    '[original]\n"load.min_delivery_rate" = "95 %"\n')
    limits = {lim.key: lim for lim in load("full", path, env={}).limits("load")}
    assert set(limits) == {"max_p95_ws_connect_ms", "min_delivery_rate", "max_errors"}
    assert limits["max_p95_ws_connect_ms"].value == 500
    assert not limits["max_p95_ws_connect_ms"].shared
    assert limits["max_errors"].shared
    assert limits["min_delivery_rate"].original == "95 %"


def test_judge() -> None:
    limits = [Limit("max_p95_run_ms", "p95_run_ms", "max", 2000),
              Limit("min_events_per_s", "events_per_s", "min", 1000),
              Limit("max_rss_growth_mb", "rss_growth_mb", "max", 50),
              Limit("min_success_rate", "success_rate", "min", 1.0),
              Limit("max_p95_ws_connect_ms", "p95_ws_connect_ms", "max", 2000, shared=True)]
    checks = judge(limits, {"p95_run_ms": 2000.0, "events_per_s": 999.9},
                   unmeasurable=["rss_growth_mb"])
    verdicts = {c.measure: (c.passed, c.note) for c in checks}
    assert verdicts == {"p95_run_ms": (True, ""), "events_per_s": (False, ""),
                        "rss_growth_mb": (True, "not available from this driver"),
                        "success_rate": (False, "not measured")}
    assert not Limit("max_x", "x", "max", 1).holds(float("nan"))


def test_compose_overrides_apply_on_the_compose_stack_only() -> None:
    local, compose = load("full", env={}), load("full", env={}, stack="compose")

    def limit(settings: Settings, table: str, key: str) -> float:
        value: float = settings.section(table)[key]
        return value

    assert limit(local, "failure_recovery", "max_backend_kill_recovery_ms") == 5000
    assert limit(compose, "failure_recovery", "max_backend_kill_recovery_ms") == 15000
    assert limit(compose, "failure_recovery", "max_socket_drop_recovery_ms") == 5000
    assert limit(compose, "all", "max_p95_ws_connect_ms") == 4000
    smoke = load("smoke", env={}, stack="compose")
    assert limit(smoke, "failure_recovery", "ticks") == 500
    assert limit(smoke, "failure_recovery", "max_auth_down_recovery_ms") == 15000
