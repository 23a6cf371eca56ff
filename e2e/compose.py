"""The compose driver: the same scenarios against the compose stack.

A thin layer over the docker CLI. Compose itself (``docker compose`` or the older
``docker-compose``, whichever answers) only builds, starts and removes the
project; everything else goes to the engine through plain ``docker`` commands
on the project's containers (found by compose's labels), because those behave the
same under every Compose version: ``ps`` (states, health and published ports in
one call), ``kill``, ``stop``, ``start``, ``stats``. Every command is built by
:class:`ComposeCommands` and every answer is read by a parser, both unit tested;
the driver itself runs against the real engine (``make compose-e2e``).

Each run gets its own project (``agentchat-e2e-<random>``), fresh strong secrets
and ``APP_ENVIRONMENT=production``, so the run also proves that production accepts
a properly configured stack. ``compose.dev.yml`` publishes the data stores on
127.0.0.1 (the suite reads run leases from Redis), on free host ports the driver
picks, and ``down -v`` removes containers, networks and volumes at the end,
whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from e2e.drivers import Progress, Shape, StackDriver

__all__ = ["ComposeCommands", "ComposeDriver", "ComposeError", "Container", "compose_cli",
           "host_ports", "parse_port", "parse_ps", "parse_published", "parse_size_mib",
           "parse_stats", "stack_secrets"]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FILES = (REPO / "docker-compose.yml", REPO / "compose.dev.yml")
OFFLINE_FILE = REPO / "compose.offline.yml"
#: host port variables of the compose files (the backend's first: it is scaled)
PORT_VARIABLES = ("BACKEND_PORT", "AUTH_PORT", "POSTGRES_PORT", "REDIS_PORT",
                  "CLICKHOUSE_PORT")
CONTAINER_PORTS = {"backend": 8000, "auth": 8001, "redis": 6379}
#: the secrets docker-compose.yml reads (each has a development-only default)
SECRET_VARIABLES = ("POSTGRES_PASSWORD", "POSTGRES_OWNER_PASSWORD", "POSTGRES_AUTH_PASSWORD",
                    "POSTGRES_APP_PASSWORD", "REDIS_AUTH_PASSWORD", "REDIS_BACKEND_PASSWORD",
                    "REDIS_WORKER_PASSWORD", "CLICKHOUSE_PASSWORD", "INTERNAL_TOKEN")
#: the worker's default WORKER_CONCURRENCY (compose passes no override)
WORKER_CONCURRENCY = 50

#: the fields of ``docker ps`` the driver reads, a tab between them: ``{{json .}}``
#: would name ``.Size`` too, which makes docker measure every container's disk
#: (18 s for seven containers on fuse-overlayfs, against 30 ms)
PS_FIELDS = ("ID", "Names", "State", "Status", "Ports", "Labels")
PS_FORMAT = "\t".join(f"{{{{.{name}}}}}" for name in PS_FIELDS)


class ComposeError(RuntimeError):
    """A docker command failed; the message carries the command and its stderr."""


def stack_secrets() -> dict[str, str]:
    """A fresh strong value for every secret of the stack (URL-safe: hex)."""
    return {name: secrets.token_hex(24) for name in SECRET_VARIABLES}


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def host_ports(backends: int = 1) -> dict[str, str]:
    """Host ports for a run, fixed rather than ``0``: Docker gives a ``0`` port a new
    number when a killed container starts again (a client would lose the replica),
    a fixed one back. The backends share a range of exactly one port a replica:
    a replica that starts again finds only its own port free (in a wider range
    Docker may hand it another)."""
    first = random.Random()
    for _ in range(200):
        base = first.randrange(20_000, 30_000)
        ports = range(base, base + backends + len(PORT_VARIABLES) - 1)
        if all(_free(port) for port in ports):
            others = [str(port) for port in ports[backends:]]
            return {"BACKEND_PORT": f"{base}-{base + backends - 1}" if backends > 1 else str(base),
                    **dict(zip(PORT_VARIABLES[1:], others, strict=True))}
    raise ComposeError("found no free host ports between 20000 and 30000")


def compose_cli(which: Callable[[str], str | None] = shutil.which,
                answers: Callable[[list[str]], bool] | None = None) -> list[str]:
    """``docker compose`` when the plugin answers, else ``docker-compose`` (Compose
    v1, as Debian packages it), else an error saying what is missing."""
    def plugin_answers(argv: list[str]) -> bool:
        try:
            return subprocess.run(argv, capture_output=True, timeout=30,
                                  check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    answers = answers or plugin_answers
    if which("docker") and answers(["docker", "compose", "version"]):
        return ["docker", "compose"]
    if which("docker-compose"):
        return ["docker-compose"]
    raise ComposeError("neither `docker compose` nor `docker-compose` is installed")


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    service: str
    number: int  # the replica's index, from 1
    state: str  # running, exited …
    health: str  # healthy, starting, unhealthy, "" without a healthcheck
    #: container port → (host, host port) of what is published
    ports: dict[int, tuple[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ComposeCommands:
    """The argument lists of every docker command the driver runs."""

    project: str
    files: tuple[Path, ...] = DEFAULT_FILES
    compose: tuple[str, ...] = ("docker", "compose")
    docker: str = "docker"
    secrets: dict[str, str] = field(default_factory=stack_secrets)
    ports: dict[str, str] = field(default_factory=host_ports)

    def base(self) -> list[str]:
        argv = [*self.compose, "-p", self.project]
        for file in self.files:
            argv += ["-f", str(file)]
        return argv

    def build(self) -> list[str]:
        return [*self.base(), "build"]

    def up(self, scale: dict[str, int]) -> list[str]:
        # no --wait: Compose v1 lacks it; the driver waits on the containers' health
        argv = [*self.base(), "up", "--detach", "--no-build"]
        for service, count in sorted(scale.items()):
            argv += ["--scale", f"{service}={count}"]
        return argv

    def logs(self) -> list[str]:
        return [*self.base(), "logs", "--no-color", "--timestamps"]

    def down(self) -> list[str]:
        return [*self.base(), "down", "--volumes", "--remove-orphans", "--timeout", "20"]

    def ps(self) -> list[str]:
        return [self.docker, "ps", "--all", "--no-trunc", "--filter",
                f"label=com.docker.compose.project={self.project}", "--format", PS_FORMAT]

    def container(self, verb: str, container: str) -> list[str]:
        if verb == "kill":
            return [self.docker, "kill", "--signal", "KILL", container]
        if verb == "stop":
            return [self.docker, "stop", "--time", "20", container]
        if verb != "start":
            raise ValueError(f"no container verb {verb!r}")
        return [self.docker, "start", container]

    def no_restart(self, containers: Sequence[str]) -> list[str]:
        return [self.docker, "update", "--restart", "no", *containers]

    def stats(self, containers: Sequence[str]) -> list[str]:
        return [self.docker, "stats", "--no-stream", "--format", "{{json .}}", *containers]

    def environment(self) -> dict[str, str]:
        """Variables every compose command runs with: production, fresh secrets, free
        host ports on 127.0.0.1 (the shell's values win over a ``.env`` file)."""
        return {**self.ports, **self.secrets, "APP_ENVIRONMENT": "production",
                "PUBLISH_ADDRESS": "127.0.0.1"}


def _labels(value: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in value.split(",") if "=" in part)


def _health(status: str) -> str:
    """``Up 5 seconds (healthy)`` → healthy; ``(health: starting)`` → starting."""
    match = re.search(r"\((?:health: )?(healthy|unhealthy|starting)\)", status)
    return match.group(1) if match else ""


def parse_published(text: str) -> dict[int, tuple[str, int]]:
    """``docker ps``'s Ports (``127.0.0.1:32772->8000/tcp, 8010/tcp``): container
    port → the address this machine dials, for the published ones."""
    published: dict[int, tuple[str, int]] = {}
    for part in text.split(","):
        outside, arrow, inside = part.strip().partition("->")
        if not arrow or not inside.endswith("/tcp"):
            continue
        host, port = parse_port(outside)
        published.setdefault(int(inside.removesuffix("/tcp")), (host, port))
    return published


def parse_ps(text: str) -> list[Container]:
    """The project's containers from ``docker ps --all --format PS_FORMAT``."""
    containers = []
    for line in text.splitlines():
        if not line.strip():
            continue
        item = dict(zip(PS_FIELDS, line.split("\t"), strict=True))
        labels = _labels(item["Labels"])
        service = labels.get("com.docker.compose.service", "")
        if not service or labels.get("com.docker.compose.oneoff") == "True":
            continue
        containers.append(Container(
            id=item["ID"], name=item["Names"].split(",")[0], service=service,
            number=int(labels.get("com.docker.compose.container-number", "1")),
            state=item["State"].lower(), health=_health(item["Status"]),
            ports=parse_published(item["Ports"])))
    return sorted(containers, key=lambda c: (c.service, c.number))


def parse_port(text: str) -> tuple[str, int]:
    """``docker port``'s answer (``127.0.0.1:49153``, maybe a ``[::]:49153`` line
    too) as a host this machine can dial and the port."""
    for line in text.split():
        host, _, port = line.strip().rpartition(":")
        if port.isdigit():
            host = host.strip("[]")
            return ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host), int(port)
    raise ComposeError(f"no published port in {text!r}")


_UNITS = {"b": 1 / 2**20, "kib": 1 / 1024, "mib": 1.0, "gib": 1024.0, "tib": 2**20,
          "kb": 1e3 / 2**20, "mb": 1e6 / 2**20, "gb": 1e9 / 2**20, "tb": 1e12 / 2**20}


def parse_size_mib(text: str) -> float:
    """``"45.6MiB"``, ``"1.2GiB"``, ``"512kB"`` → MiB."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]+)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ComposeError(f"not a size: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_stats(text: str) -> dict[str, float]:
    """Container name → memory in MiB from ``docker stats --no-stream --format
    '{{json .}}'`` (``"MemUsage": "45.6MiB / 7.6GiB"``: the part before the slash)."""
    figures = {}
    for item in (json.loads(line) for line in text.splitlines() if line.strip()):
        usage = str(item.get("MemUsage", ""))
        if "/" in usage:
            figures[str(item.get("Name", ""))] = parse_size_mib(usage.split("/", 1)[0])
    return figures


def _run(argv: list[str], timeout: float, env: dict[str, str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False, cwd=REPO, env={**os.environ, **env})
    except FileNotFoundError as exc:
        raise ComposeError(f"{argv[0]} not found: the compose driver needs the docker "
                           "CLI and a running Docker engine") from exc
    except subprocess.TimeoutExpired as exc:
        raise ComposeError(f"{' '.join(argv)} timed out after {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise ComposeError(f"{' '.join(argv)} failed ({done.returncode}):\n"
                           f"{done.stderr[-2000:]}")
    return done.stdout


class ComposeDriver(StackDriver):
    """The compose stack under a per-run project; needs a Docker engine. With
    ``offline`` the images are those of ``deploy/offline/build.sh`` (built before,
    not by the driver) through ``compose.offline.yml``."""

    kind = "compose"
    memory_source = "docker stats --no-stream (MemUsage of each container)"
    per_service_start = False  # `up` starts them together

    def __init__(self, shape: Shape, progress: Progress | None = None, *,
                 offline: bool = False, commands: ComposeCommands | None = None,
                 health_timeout_s: float = 180.0) -> None:
        # compose passes no WORKER_CONCURRENCY: capacity comes from more workers
        workers = max(shape.workers, math.ceil(
            shape.workers * shape.worker_concurrency / WORKER_CONCURRENCY))
        super().__init__(Shape(shape.backends, workers, WORKER_CONCURRENCY), progress)
        self.offline = offline
        self.commands = commands or ComposeCommands(
            f"agentchat-e2e-{secrets.token_hex(4)}",
            files=(*DEFAULT_FILES, OFFLINE_FILE) if offline else DEFAULT_FILES,
            compose=tuple(compose_cli()), ports=host_ports(self.shape.backends))
        self._health_timeout_s = health_timeout_s
        self._urls: dict[tuple[str, int], str] = {}
        self.containers: list[Container] = []
        self._started = False

    @property
    def scale(self) -> dict[str, int]:
        return {"backend": self.shape.backends, "worker": self.shape.workers}

    # -- running docker ----------------------------------------------------------------
    def run(self, argv: list[str], timeout: float = 120.0) -> str:
        return _run(argv, timeout, self.commands.environment())

    def start(self) -> None:
        if not self.offline:
            self.progress(f"compose project {self.commands.project}: building images")
            self.run(self.commands.build(), timeout=1800)
        self._started = True
        self.progress(f"compose project {self.commands.project}: up, waiting for health")
        started = time.monotonic()
        try:
            self.run(self.commands.up(self.scale), timeout=600)
            self.wait_healthy()
            # the suite kills and starts services itself, as on the local stack: a
            # restart policy would bring a killed one back behind its back
            self.run(self.commands.no_restart([c.name for c in self.containers]))
            self.start_timings["stack (compose up, every service healthy)"] = (
                time.monotonic() - started)
        except BaseException:
            self.stop()  # __exit__ does not run when __enter__ raised
            raise

    def wait_healthy(self) -> None:
        """Until every long-running container is running and healthy; a one-shot one
        (``migrate``) must have exited 0."""
        deadline = time.monotonic() + self._health_timeout_s
        while True:
            self.refresh()
            waiting = [c for c in self.containers if not _settled(c)]
            failed = [c for c in waiting if c.state in ("exited", "dead") or
                      c.health == "unhealthy"]
            if failed or (waiting and time.monotonic() > deadline):
                names = ", ".join(f"{c.name} ({c.state} {c.health})".strip()
                                  for c in failed or waiting)
                raise ComposeError(f"not healthy: {names}\n{self._tail_logs(failed or waiting)}")
            if not waiting and self.containers:
                return
            time.sleep(1.0)

    def _tail_logs(self, containers: list[Container]) -> str:
        parts = []
        for container in containers[:4]:
            try:
                text = _run([self.commands.docker, "logs", "--tail", "30", container.name],
                                 30, {})
            except ComposeError as exc:
                text = str(exc)
            parts.append(f"--- {container.name}\n{text}")
        return "\n".join(parts)

    def stop(self) -> None:
        if self._started:
            self._started = False
            self.progress(f"compose project {self.commands.project}: down --volumes")
            self.run(self.commands.down(), timeout=300)

    def refresh(self) -> None:
        """Read containers and published ports again (a restarted container may get
        another host port): one ``docker ps``."""
        self.containers = parse_ps(self.run(self.commands.ps()))
        self._urls.clear()
        for container in self.containers:
            port = CONTAINER_PORTS.get(container.service)
            # Redis is published only with compose.dev.yml
            if port not in container.ports or container.state != "running":
                continue
            host, published = container.ports[port]
            if container.service == "redis":
                # the backend's ACL user: leases and the ingest stream, what the suite reads
                password = self.commands.secrets["REDIS_BACKEND_PASSWORD"]
                url = f"redis://backend:{password}@{host}:{published}"
            else:
                url = f"http://{host}:{published}"
            self._urls[(container.service, container.number)] = url

    def _url(self, service: str, index: int = 1) -> str:
        try:
            return self._urls[(service, index)]
        except KeyError:
            raise ComposeError(f"{service} #{index} publishes no port (is it running?)") from None

    # -- addresses ---------------------------------------------------------------------
    @property
    def auth_url(self) -> str:
        return self._url("auth")

    @property
    def redis_url(self) -> str:
        return self._url("redis") + "/0"

    def backend_url(self, replica: int = 1) -> str:
        return self._url("backend", replica)

    # -- names -------------------------------------------------------------------------
    def container_of(self, name: str) -> Container:
        """``backend-2`` → backend's replica 2; ``worker`` → worker's replica 1."""
        match = re.fullmatch(r"(\w+?)(?:-(\d+))?", name)
        service, index = (match.group(1), int(match.group(2) or 1)) if match else (name, 1)
        for container in self.containers:
            if (container.service, container.number) == (service, index):
                return container
        raise ComposeError(f"no container for {name}")

    # -- faults ------------------------------------------------------------------------
    async def _act(self, verb: str, name: str) -> None:
        argv = self.commands.container(verb, self.container_of(name).name)
        await asyncio.to_thread(self.run, argv)

    async def kill(self, name: str) -> None:
        await self._act("kill", name)

    async def stop_service(self, name: str) -> None:
        await self._act("stop", name)

    async def start_service(self, name: str) -> float:
        started = time.monotonic()
        await self._act("start", name)
        await self._healthy(name)
        return time.monotonic() - started

    async def _healthy(self, name: str) -> None:
        deadline = time.monotonic() + self._health_timeout_s
        while True:
            await asyncio.to_thread(self.refresh)
            container = self.container_of(name)
            if container.state == "running" and container.health in ("healthy", ""):
                return
            if time.monotonic() > deadline:
                raise ComposeError(f"{name} not healthy within {self._health_timeout_s:.0f}s "
                                   f"(state {container.state}, health {container.health})")
            await asyncio.sleep(0.5)

    def is_running(self, name: str) -> bool:
        self.refresh()
        return self.container_of(name).state == "running"

    def worker_service(self, worker_id: str) -> str | None:
        """Workers call themselves ``worker-<hostname>``; a container's hostname is
        the start of its id."""
        host = worker_id.removeprefix("worker-")
        for container in self.containers:
            if container.service == "worker" and host and container.id.startswith(host):
                return self.worker_names()[container.number - 1]
        return None

    # -- observation -------------------------------------------------------------------
    def secrets(self) -> dict[str, str]:
        return dict(self.commands.secrets)

    def rss_mb(self) -> dict[str, float]:
        names = {}
        for name in self.memory_services():
            try:
                names[self.container_of(name).name] = name
            except ComposeError:
                continue
        if not names:
            return {}
        by_container = parse_stats(self.run(self.commands.stats(sorted(names)), timeout=30))
        return {names[c]: mib for c, mib in by_container.items() if c in names}

    def collect_logs(self, destination: Path) -> list[Path]:
        destination.mkdir(parents=True, exist_ok=True)
        target = destination / "compose.log"
        target.write_text(self.run(self.commands.logs(), timeout=120))
        return [target]


def _settled(container: Container) -> bool:
    if container.service == "migrate":
        return container.state == "exited"  # its exit code is checked by `up`'s dependants
    return container.state == "running" and container.health in ("healthy", "")
