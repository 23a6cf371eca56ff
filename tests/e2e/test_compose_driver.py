"""The compose driver's pure parts: the exact argument lists it runs and its
reading of docker's answers. The samples in ``samples/`` were recorded from a
Docker engine (20.10, docker CLI 28, Compose 1.29) running a scaled project; the
driver itself runs against the real engine in tests/compose and ``make compose-e2e``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.compose import (
    DEFAULT_FILES,
    OFFLINE_FILE,
    PORT_VARIABLES,
    SECRET_VARIABLES,
    ComposeCommands,
    ComposeDriver,
    ComposeError,
    Container,
    compose_cli,
    host_ports,
    parse_port,
    parse_ps,
    parse_published,
    parse_size_mib,
    parse_stats,
    stack_secrets,
)
from e2e.drivers import Shape

SAMPLES = Path(__file__).with_name("samples")
PROJECT = "agentchat-e2e-1a2b3c4d"


def _commands(compose: tuple[str, ...] = ("docker-compose",)) -> ComposeCommands:
    return ComposeCommands(PROJECT, compose=compose, secrets={"INTERNAL_TOKEN": "t" * 48})


def test_compose_commands_are_exact() -> None:
    commands = _commands()
    base = ["docker-compose", "-p", PROJECT, "-f", str(DEFAULT_FILES[0]),
            "-f", str(DEFAULT_FILES[1])]
    assert commands.base() == base
    assert commands.build() == [*base, "build"]
    assert commands.up({"worker": 4, "backend": 2}) == [
        *base, "up", "--detach", "--no-build", "--scale", "backend=2", "--scale", "worker=4"]
    assert commands.logs() == [*base, "logs", "--no-color", "--timestamps"]
    assert commands.down() == [*base, "down", "--volumes", "--remove-orphans", "--timeout", "20"]


def test_engine_commands_work_under_every_compose_version() -> None:
    commands = _commands(("docker", "compose"))
    assert commands.ps() == ["docker", "ps", "--all", "--no-trunc", "--filter",
                             f"label=com.docker.compose.project={PROJECT}", "--format",
                             "{{.ID}}\t{{.Names}}\t{{.State}}\t{{.Status}}\t{{.Ports}}\t{{.Labels}}"]
    assert commands.container("kill", "c") == ["docker", "kill", "--signal", "KILL", "c"]
    assert commands.container("stop", "c") == ["docker", "stop", "--time", "20", "c"]
    assert commands.container("start", "c") == ["docker", "start", "c"]
    assert commands.no_restart(["a", "b"]) == ["docker", "update", "--restart", "no", "a", "b"]
    assert commands.stats(["a", "b"]) == ["docker", "stats", "--no-stream", "--format",
                                          "{{json .}}", "a", "b"]
    with pytest.raises(ValueError):
        commands.container("rm", "c")


def test_every_command_runs_in_production_with_fresh_secrets_and_free_ports() -> None:
    env = ComposeCommands(PROJECT).environment()
    assert env["APP_ENVIRONMENT"] == "production"
    assert env["PUBLISH_ADDRESS"] == "127.0.0.1"
    assert len({int(env[name]) for name in PORT_VARIABLES}) == len(PORT_VARIABLES)
    assert all(len(env[name]) >= 32 for name in SECRET_VARIABLES)
    assert ComposeCommands(PROJECT).secrets != ComposeCommands(PROJECT).secrets
    assert set(stack_secrets()) == set(SECRET_VARIABLES)


def test_host_ports_are_free_and_distinct() -> None:
    ports = host_ports(backends=2)
    assert set(ports) == set(PORT_VARIABLES)
    first, last = map(int, ports["BACKEND_PORT"].split("-"))
    assert last == first + 1  # exactly one a replica: a restarted one gets its own back
    singles = {int(ports[name]) for name in PORT_VARIABLES[1:]}
    assert len(singles) == 4 and not singles & {first, last}
    assert ComposeDriver(Shape(backends=2)).commands.ports["BACKEND_PORT"].count("-") == 1


def test_the_plugin_is_preferred_and_compose_v1_is_the_fallback() -> None:
    assert compose_cli(lambda _: "/usr/bin/x", lambda _: True) == ["docker", "compose"]
    assert compose_cli(lambda _: "/usr/bin/x", lambda _: False) == ["docker-compose"]
    with pytest.raises(ComposeError, match="neither"):
        compose_cli(lambda _: None, lambda _: False)


def test_offline_runs_add_the_image_override_and_build_nothing() -> None:
    driver = ComposeDriver(Shape(), offline=True)
    assert driver.commands.files == (*DEFAULT_FILES, OFFLINE_FILE)
    assert driver.commands.project.startswith("agentchat-e2e-")
    assert driver.commands.project != ComposeDriver(Shape()).commands.project


def test_parse_ps_reads_service_replica_state_and_health() -> None:
    containers = parse_ps((SAMPLES / "docker_ps.tsv").read_text())
    assert [(c.service, c.number, c.state, c.health) for c in containers] == [
        ("app", 1, "running", "healthy"), ("app", 2, "running", "healthy"),
        ("once", 1, "exited", "")]
    assert containers[1].name == f"{PROJECT}_app_2"
    assert containers[0].ports == {8000: ("127.0.0.1", 32772)}
    assert containers[2].ports == {}
    assert len(containers[0].id) == 64
    assert parse_ps("") == []


@pytest.mark.parametrize(("status", "health"), [
    ("Up 3 seconds (healthy)", "healthy"), ("Up 1 second (health: starting)", "starting"),
    ("Up 2 minutes (unhealthy)", "unhealthy"), ("Exited (0) 5 seconds ago", ""),
    ("Up 4 seconds", "")])
def test_health_comes_from_the_status_text(status: str, health: str) -> None:
    line = (f"c\tp_x_1\trunning\t{status}\t\t"
            "com.docker.compose.service=x,com.docker.compose.container-number=1")
    (container,) = parse_ps(line)
    assert container == Container("c", "p_x_1", "x", 1, "running", health)


def test_parse_port() -> None:
    assert parse_port("127.0.0.1:32772\n") == ("127.0.0.1", 32772)
    assert parse_port("0.0.0.0:32771\n[::]:32771\n") == ("127.0.0.1", 32771)
    with pytest.raises(ComposeError, match="no published port"):
        parse_port("\n")


def test_published_ports_of_docker_ps() -> None:
    assert parse_published("0.0.0.0:32771->8000/tcp, :::32771->8000/tcp, 8010/tcp") == {
        8000: ("127.0.0.1", 32771)}
    assert parse_published("127.0.0.1:49153->6379/tcp") == {6379: ("127.0.0.1", 49153)}
    assert parse_published("8000/tcp") == parse_published("") == {}


def test_parse_stats_and_sizes() -> None:
    stats = parse_stats((SAMPLES / "docker_stats.ndjson").read_text())
    assert set(stats) == {f"{PROJECT}_app_1", f"{PROJECT}_app_2"}
    assert all(0 < mib < 100 for mib in stats.values())
    assert parse_size_mib("1.2GiB") == pytest.approx(1.2 * 1024)
    assert parse_size_mib("512kB") == pytest.approx(512e3 / 2**20)
    with pytest.raises(ComposeError):
        parse_size_mib("lots")


def test_capacity_comes_from_more_workers() -> None:
    driver = ComposeDriver(Shape(backends=1, workers=2, worker_concurrency=110))
    assert driver.scale == {"backend": 1, "worker": 5}
    assert driver.worker_names() == [f"worker-{n}" for n in range(1, 6)]


def test_replica_names_map_to_containers() -> None:
    driver = ComposeDriver(Shape(backends=2))
    driver.containers = parse_ps((SAMPLES / "docker_ps.tsv").read_text())
    assert driver.container_of("app-2").name == f"{PROJECT}_app_2"
    assert driver.container_of("app").number == 1
    with pytest.raises(ComposeError, match="no container for backend"):
        driver.container_of("backend")
