"""The compose driver without a Docker engine: the exact argument lists it runs,
and its reading of docker's answers.

The samples in ``samples/`` follow what ``docker compose ps --format json``
prints (one object a line since Compose 2.21; one array before), what ``docker
compose port`` and ``docker stats --no-stream --format json`` print; they are
written from those formats, since no engine runs where this is developed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from e2e.compose import (
    REPO,
    ComposeCommands,
    ComposeDriver,
    ComposeError,
    parse_port,
    parse_ps,
    parse_size_mib,
    parse_stats,
)
from e2e.drivers import Shape

SAMPLES = Path(__file__).with_name("samples")
PROJECT = "agentchat-e2e-1a2b3c4d"
BASE = ["docker", "compose", "-p", PROJECT, "-f", str(REPO / "docker-compose.yml"),
        "--env-file", str(REPO / ".env")]
PORTS = {("auth", "1"): "0.0.0.0:32768\n", ("backend", "1"): "0.0.0.0:32771\n[::]:32771\n",
         ("backend", "2"): "0.0.0.0:32772\n", ("redis", "1"): "0.0.0.0:32767\n"}


@dataclass
class FakeDocker:
    """Answers like docker would and records every command with its environment."""

    ps: str = (SAMPLES / "compose_ps.ndjson").read_text()
    fail_on: str = ""
    calls: list[list[str]] = field(default_factory=list)
    envs: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, argv: list[str], timeout: float, env: dict[str, str]) -> str:
        self.calls.append(argv)
        self.envs.append(env)
        if self.fail_on and self.fail_on in argv:
            raise ComposeError(f"{' '.join(argv)} failed")
        if "ps" in argv:
            return self.ps
        if "port" in argv:
            index = argv[argv.index("--index") + 1]
            return PORTS[(argv[-2], index)]
        if "stats" in argv:
            return (SAMPLES / "docker_stats.ndjson").read_text()
        return ""


def _driver(docker: FakeDocker, env_file: Path | None = None,
            shape: Shape = Shape(backends=2, workers=2)) -> ComposeDriver:
    commands = ComposeCommands(PROJECT, env_file=env_file or REPO / ".env")
    return ComposeDriver(shape, commands=commands, runner=docker, health_timeout_s=2)


def test_commands_are_exact() -> None:
    commands = ComposeCommands(PROJECT)
    assert commands.base() == BASE
    assert commands.up({"worker": 4, "backend": 2}) == [
        *BASE, "up", "--detach", "--wait", "--wait-timeout", "300",
        "--scale", "backend=2", "--scale", "worker=4"]
    assert commands.ps() == [*BASE, "ps", "--all", "--format", "json"]
    assert commands.port("backend", 8000, 2) == [*BASE, "port", "--index", "2", "backend",
                                                  "8000"]
    assert commands.kill("redis") == [*BASE, "kill", "-s", "KILL", "redis"]
    assert commands.restart("redis") == [*BASE, "restart", "redis"]
    assert commands.stop("auth") == [*BASE, "stop", "auth"]
    assert commands.start("auth") == [*BASE, "start", "auth"]
    assert commands.logs() == [*BASE, "logs", "--no-color", "--timestamps"]
    assert commands.down() == [*BASE, "down", "-v", "--remove-orphans"]
    assert commands.container("kill", "c-1") == ["docker", "kill", "-s", "KILL", "c-1"]
    assert commands.container("restart", "c-1") == ["docker", "restart", "c-1"]
    assert commands.stats(["a", "b"]) == ["docker", "stats", "--no-stream", "--format",
                                          "json", "a", "b"]
    with pytest.raises(ValueError):
        commands.container("rm", "c-1")


def test_every_command_runs_with_host_ports_zero() -> None:
    assert ComposeCommands(PROJECT).environment() == {
        "BACKEND_PORT": "0", "AUTH_PORT": "0", "POSTGRES_PORT": "0", "REDIS_PORT": "0",
        "CLICKHOUSE_PORT": "0"}


def test_a_project_name_per_run() -> None:
    first, second = ComposeDriver(Shape()), ComposeDriver(Shape())
    assert first.commands.project.startswith("agentchat-e2e-")
    assert first.commands.project != second.commands.project


def test_parse_ps_of_compose_2_21_and_later() -> None:
    containers = parse_ps((SAMPLES / "compose_ps.ndjson").read_text())
    assert [(c.service, c.number, c.state, c.health) for c in containers] == [
        ("auth", 1, "running", "healthy"), ("backend", 1, "running", "healthy"),
        ("backend", 2, "running", "healthy"), ("clickhouse", 1, "running", "healthy"),
        ("postgres", 1, "running", "healthy"), ("redis", 1, "running", "healthy"),
        ("worker", 1, "running", "healthy"), ("worker", 2, "exited", "")]
    assert containers[2].name == f"{PROJECT}-backend-2"


def test_parse_ps_of_older_compose_reads_the_replica_from_the_name() -> None:
    containers = parse_ps((SAMPLES / "compose_ps_v2_17.json").read_text())
    assert [(c.service, c.number, c.health) for c in containers] == [
        ("backend", 1, "healthy"), ("worker", 3, "starting")]
    assert parse_ps("") == []


def test_parse_port() -> None:
    assert parse_port("0.0.0.0:32771\n[::]:32771\n") == ("127.0.0.1", 32771)
    assert parse_port("[::]:49153\n") == ("127.0.0.1", 49153)
    assert parse_port("192.168.1.20:8000") == ("192.168.1.20", 8000)
    with pytest.raises(ComposeError, match="no published port"):
        parse_port("\n")


def test_parse_stats_and_sizes() -> None:
    stats = parse_stats((SAMPLES / "docker_stats.ndjson").read_text())
    assert stats[f"{PROJECT}-backend-1"] == pytest.approx(157.8)
    assert stats[f"{PROJECT}-worker-1"] == pytest.approx(1.02 * 1024)
    assert parse_size_mib("512kB") == pytest.approx(512e3 / 2**20)
    assert parse_size_mib("2MB") == pytest.approx(2e6 / 2**20)
    with pytest.raises(ComposeError):
        parse_size_mib("lots")


def test_start_builds_ups_and_reads_the_ports() -> None:
    docker = FakeDocker()
    driver = _driver(docker, env_file=Path(__file__))  # any file that exists
    driver.start()
    commands = ComposeCommands(PROJECT, env_file=Path(__file__))
    assert docker.calls[:3] == [commands.build(), commands.up({"backend": 2, "worker": 2}),
                                commands.ps()]
    assert all(env["BACKEND_PORT"] == "0" for env in docker.envs)
    assert driver.auth_url == "http://127.0.0.1:32768"
    assert driver.backend_url(2) == "http://127.0.0.1:32772"
    assert driver.ws_url(1) == "ws://127.0.0.1:32771/ws"
    assert driver.redis_url == "redis://127.0.0.1:32767/0"
    assert "stack (compose up --wait)" in driver.start_timings
    driver.stop()
    assert docker.calls[-1] == commands.down()


def test_a_failed_up_still_takes_the_project_down() -> None:
    docker = FakeDocker(fail_on="up")
    driver = _driver(docker, env_file=Path(__file__))
    with pytest.raises(ComposeError):
        driver.start()
    assert docker.calls[-1][-3:] == ["down", "-v", "--remove-orphans"]


def test_a_missing_env_file_says_what_to_do(tmp_path: Path) -> None:
    driver = _driver(FakeDocker(), env_file=tmp_path / ".env")
    with pytest.raises(ComposeError, match=r"cp \.env\.example \.env"):
        driver.start()


def test_capacity_comes_from_more_workers() -> None:
    driver = ComposeDriver(Shape(backends=1, workers=2, worker_concurrency=110))
    assert driver.scale == {"backend": 1, "worker": 5}
    assert driver.worker_names() == [f"worker-{n}" for n in range(1, 6)]


def test_faults_act_on_one_replica_or_the_service() -> None:
    docker = FakeDocker()
    driver = _driver(docker, env_file=Path(__file__))
    driver.start()
    docker.calls.clear()
    asyncio.run(driver.kill("backend-2"))
    asyncio.run(driver.kill("redis"))
    assert docker.calls == [["docker", "kill", "-s", "KILL", f"{PROJECT}-backend-2"],
                            [*driver.commands.base(), "kill", "-s", "KILL", "redis"]]
    docker.calls.clear()
    assert asyncio.run(driver.restart("auth")) >= 0
    assert docker.calls[0] == [*driver.commands.base(), "restart", "auth"]
    assert docker.calls[1] == driver.commands.ps()  # waits for healthy, reads ports again
    assert not driver.is_running("worker-2")
    with pytest.raises(ComposeError, match="worker-2 not healthy"):
        asyncio.run(driver.start_service("worker-2"))


def test_the_worker_of_a_lease_and_memory_per_service() -> None:
    docker = FakeDocker()
    driver = _driver(docker, env_file=Path(__file__))
    driver.start()
    assert driver.worker_service("worker-0718293a4b5c") == "worker-1"
    assert driver.worker_service("worker-ffffffffffff") is None
    memory = driver.rss_mb()
    assert memory["backend-1"] == pytest.approx(157.8)
    assert memory["redis"] == pytest.approx(9.641)
    assert "worker-2" not in memory  # an exited container reports nothing
    assert docker.calls[-1][:5] == ["docker", "stats", "--no-stream", "--format", "json"]
