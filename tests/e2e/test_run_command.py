"""``python -m e2e run``: its arguments, the driver it picks, its exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import e2e.__main__ as cli
from e2e.compose import ComposeDriver
from e2e.drivers import LocalDriver, Shape
from e2e.report import Report
from e2e.scenarios import ScenarioResult
from e2e.thresholds import Check


def _fake_suite(calls: list[dict[str, Any]], passed: bool) -> Any:
    async def run_suite(make_driver: Any, scenarios: list[Any], settings: Any,
                        report_dir: Path, *, stack: str, progress: Any) -> Report:
        calls.append({"make_driver": make_driver, "scenarios": [s.name for s in scenarios],
                      "scale": settings.scale, "report_dir": report_dir, "stack": stack})
        check = Check("p95_run_ms", "max", 2000, 100.0 if passed else 3000.0, passed)
        return Report("e2e_x", "t0", "t1", stack, settings.scale, {}, None, {}, {},
                      [ScenarioResult("agent_flow", checks=[check])])
    return run_suite


@pytest.fixture(autouse=True)
def _no_signal_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "install_signal_exit", lambda: None)


@pytest.mark.parametrize(("passed", "code", "word"), [(True, 0, "PASSED"), (False, 1, "FAILED")])
def test_exit_code_follows_the_verdict(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                       passed: bool, code: int, word: str) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cli, "run_suite", _fake_suite(calls, passed))
    assert cli.main(["run", "--scale", "smoke", "--scenario", "load", "--scenario",
                     "agent_flow", "--report-dir", str(tmp_path)]) == code
    assert calls[0]["scenarios"] == ["load", "agent_flow"]
    assert calls[0]["scale"] == "smoke" and calls[0]["stack"] == "local"
    assert capsys.readouterr().out.startswith(f"{word}: ")


def test_defaults_every_scenario_full_scale_local(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cli, "run_suite", _fake_suite(calls, True))
    assert cli.main(["run", "--report-dir", str(tmp_path)]) == 0
    assert calls[0]["scenarios"] == ["agent_flow", "concurrent_users", "failure_recovery",
                                     "load", "multi_replica"]
    assert calls[0]["scale"] == "full"
    driver = calls[0]["make_driver"](Shape(backends=2))
    try:
        assert isinstance(driver, LocalDriver) and driver.shape.backends == 2
    finally:
        driver.stop()


def test_compose_stack_uses_the_compose_driver(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cli, "run_suite", _fake_suite(calls, True))
    assert cli.main(["run", "--stack", "compose", "--report-dir", str(tmp_path)]) == 0
    assert isinstance(calls[0]["make_driver"](Shape()), ComposeDriver)


def test_bad_settings_exit_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("E2E_LOAD__RUNZ", "3")
    assert cli.main(["run", "--report-dir", str(tmp_path)]) == 2
    assert "[load] has no key 'runz'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        cli.main(["run", "--scenario", "nope"])
    assert caught.value.code == 2


def test_redis_cluster_gives_a_local_driver_on_a_cluster(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cli, "run_suite", _fake_suite(calls, True))
    assert cli.main(["run", "--redis-cluster", "--report-dir", str(tmp_path)]) == 0
    driver = calls[0]["make_driver"](Shape())
    try:
        assert isinstance(driver, LocalDriver) and driver.redis_cluster
        assert driver.stack.config.redis_cluster
    finally:
        driver.stop()


def test_redis_cluster_is_refused_on_compose(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    assert cli.main(["run", "--redis-cluster", "--stack", "compose",
                     "--report-dir", str(tmp_path)]) == 2
    assert "--redis-cluster runs on the local stack only" in capsys.readouterr().err
