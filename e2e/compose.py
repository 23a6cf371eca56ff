"""The compose driver: the same scenarios against ``docker compose``.

A thin layer over the docker CLI. Every command is built by
:class:`ComposeCommands` (a pure function of the project's name and files, unit
tested argument by argument) and every answer is read by a parser tested on
recorded outputs, because the machine that develops this project has no Docker
engine: what cannot be run here is kept small enough to be read.

Each run gets its own project name (``agentchat-e2e-<random>``), so it never
touches a stack a developer runs, and host ports ``0`` so Docker picks free ones;
the driver reads them back with ``docker compose port``. ``down -v`` removes the
containers and volumes at the end, whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from e2e.drivers import Progress, Shape, StackDriver

__all__ = ["ComposeCommands", "ComposeDriver", "ComposeError", "Container", "parse_port",
           "parse_ps", "parse_size_mib", "parse_stats"]

REPO = Path(__file__).resolve().parent.parent
#: host port variables of docker-compose.yml; "0" lets Docker choose a free port
PORT_VARIABLES = ("BACKEND_PORT", "AUTH_PORT", "POSTGRES_PORT", "REDIS_PORT",
                  "CLICKHOUSE_PORT")
CONTAINER_PORTS = {"backend": 8000, "auth": 8001, "redis": 6379}
#: the worker's default WORKER_CONCURRENCY (compose passes no override)
WORKER_CONCURRENCY = 50

#: runs one command: (argv, timeout in seconds, environment overrides) → stdout
Runner = Callable[[list[str], float, dict[str, str]], str]


class ComposeError(RuntimeError):
    """A docker command failed; the message carries the command and its stderr."""


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    service: str
    number: int  # the replica's index, from 1
    state: str  # running, exited …
    health: str  # healthy, starting, unhealthy, "" without a healthcheck


@dataclass(frozen=True)
class ComposeCommands:
    """The argument lists of every docker command the driver runs."""

    project: str
    files: tuple[Path, ...] = (REPO / "docker-compose.yml",)
    env_file: Path | None = REPO / ".env"
    docker: str = "docker"

    def base(self) -> list[str]:
        argv = [self.docker, "compose", "-p", self.project]
        for file in self.files:
            argv += ["-f", str(file)]
        if self.env_file is not None:
            argv += ["--env-file", str(self.env_file)]
        return argv

    def build(self) -> list[str]:
        return [*self.base(), "build"]

    def up(self, scale: dict[str, int], *, wait_timeout_s: int = 300) -> list[str]:
        argv = [*self.base(), "up", "--detach", "--wait", "--wait-timeout",
                str(wait_timeout_s)]
        for service, count in sorted(scale.items()):
            argv += ["--scale", f"{service}={count}"]
        return argv

    def ps(self) -> list[str]:
        return [*self.base(), "ps", "--all", "--format", "json"]

    def port(self, service: str, container_port: int, index: int = 1) -> list[str]:
        return [*self.base(), "port", "--index", str(index), service, str(container_port)]

    def kill(self, service: str) -> list[str]:
        return [*self.base(), "kill", "-s", "KILL", service]

    def stop(self, service: str) -> list[str]:
        return [*self.base(), "stop", service]

    def start(self, service: str) -> list[str]:
        return [*self.base(), "start", service]

    def restart(self, service: str) -> list[str]:
        return [*self.base(), "restart", service]

    def logs(self) -> list[str]:
        return [*self.base(), "logs", "--no-color", "--timestamps"]

    def down(self) -> list[str]:
        return [*self.base(), "down", "-v", "--remove-orphans"]

    def environment(self) -> dict[str, str]:
        """Variables every compose command runs with: host ports 0, so Docker picks
        free ones (the shell's values win over ``.env`` in compose's interpolation)."""
        return {name: "0" for name in PORT_VARIABLES}

    # one replica of a scaled service: compose's kill/stop/start act on all of them
    def container(self, verb: str, container: str) -> list[str]:
        if verb == "kill":
            return [self.docker, "kill", "-s", "KILL", container]
        if verb not in ("stop", "start", "restart"):
            raise ValueError(f"no container verb {verb!r}")
        return [self.docker, verb, container]

    def stats(self, containers: Sequence[str]) -> list[str]:
        return [self.docker, "stats", "--no-stream", "--format", "json", *containers]


def _json_lines(text: str) -> list[dict[str, object]]:
    """``docker … --format json`` prints one object a line (Compose ≥ 2.21) or, in
    older versions, one JSON array."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        items = json.loads(text)
        return [i for i in items if isinstance(i, dict)]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _labels(value: object) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, str):
        return dict(part.split("=", 1) for part in value.split(",") if "=" in part)
    return {}


def parse_ps(text: str) -> list[Container]:
    """The containers of ``docker compose ps --all --format json``."""
    containers = []
    for item in _json_lines(text):
        name = str(item.get("Name", ""))
        service = str(item.get("Service", ""))
        number = _labels(item.get("Labels")).get("com.docker.compose.container-number")
        if number is None:
            match = re.search(r"-(\d+)$", name)
            number = match.group(1) if match else "1"
        containers.append(Container(
            id=str(item.get("ID", "")), name=name, service=service, number=int(number),
            state=str(item.get("State", "")).lower(), health=str(item.get("Health", "")).lower()))
    return sorted(containers, key=lambda c: (c.service, c.number))


def parse_port(text: str) -> tuple[str, int]:
    """``docker compose port``'s answer (``0.0.0.0:49153``, maybe a ``[::]:49153``
    line too) as a host this machine can dial and the port."""
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
    """Container name → memory in MiB from ``docker stats --no-stream --format json``
    (``"MemUsage": "45.6MiB / 7.6GiB"``: the part before the slash)."""
    figures = {}
    for item in _json_lines(text):
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


@dataclass
class _Replica:
    service: str
    index: int


class ComposeDriver(StackDriver):
    """``docker compose`` with a per-run project; needs a Docker engine and ``.env``."""

    kind = "compose"
    memory_source = "docker stats --no-stream (MemUsage of each container)"
    per_service_start = False  # `up --wait` starts them together

    def __init__(self, shape: Shape, progress: Progress | None = None, *,
                 commands: ComposeCommands | None = None, runner: Runner | None = None,
                 health_timeout_s: float = 120.0) -> None:
        # compose passes no WORKER_CONCURRENCY: capacity comes from more workers
        workers = max(shape.workers, math.ceil(
            shape.workers * shape.worker_concurrency / WORKER_CONCURRENCY))
        super().__init__(Shape(shape.backends, workers, WORKER_CONCURRENCY), progress)
        self.commands = commands or ComposeCommands(f"agentchat-e2e-{secrets.token_hex(4)}")
        self._run = runner or _run
        self._health_timeout_s = health_timeout_s
        self._urls: dict[tuple[str, int], str] = {}
        self.containers: list[Container] = []
        self._started = False

    @property
    def scale(self) -> dict[str, int]:
        return {"backend": self.shape.backends, "worker": self.shape.workers}

    # -- running docker ----------------------------------------------------------------
    def run(self, argv: list[str], timeout: float = 120.0) -> str:
        return self._run(argv, timeout, self.commands.environment())

    def start(self) -> None:
        env_file = self.commands.env_file
        if env_file is not None and not env_file.exists():
            raise ComposeError(f"{env_file} is missing: `cp .env.example .env` and set "
                               "its secrets first")
        self.progress(f"docker compose project {self.commands.project}: building images")
        self.run(self.commands.build(), timeout=1800)
        self._started = True
        self.progress("docker compose up --wait …")
        started = time.monotonic()
        try:
            self.run(self.commands.up(self.scale), timeout=600)
            self.start_timings["stack (compose up --wait)"] = time.monotonic() - started
            self.refresh()
        except BaseException:
            self.stop()  # __exit__ does not run when __enter__ raised
            raise

    def stop(self) -> None:
        if self._started:
            self._started = False
            self.progress(f"docker compose down -v ({self.commands.project})")
            self.run(self.commands.down(), timeout=300)

    def refresh(self) -> None:
        """Read containers and published ports again (a restarted container may get
        another host port)."""
        self.containers = parse_ps(self.run(self.commands.ps()))
        self._urls.clear()
        for container in self.containers:
            port = CONTAINER_PORTS.get(container.service)
            if port is None or container.state != "running":
                continue
            host, published = parse_port(self.run(
                self.commands.port(container.service, port, container.number)))
            scheme = "redis" if container.service == "redis" else "http"
            self._urls[(container.service, container.number)] = f"{scheme}://{host}:{published}"

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
    def replica(self, name: str) -> _Replica:
        """``backend-2`` → (backend, 2); ``worker`` → (worker, 1)."""
        match = re.fullmatch(r"(backend|worker)(?:-(\d+))?", name)
        if match:
            return _Replica(match.group(1), int(match.group(2) or 1))
        return _Replica(name, 1)

    def _scaled(self, replica: _Replica) -> bool:
        return self.scale.get(replica.service, 1) > 1

    def container_of(self, name: str) -> Container:
        replica = self.replica(name)
        for container in self.containers:
            if (container.service, container.number) == (replica.service, replica.index):
                return container
        raise ComposeError(f"no container for {name}")

    def _act(self, verb: str, name: str) -> list[str]:
        replica = self.replica(name)
        if self._scaled(replica):
            return self.commands.container(verb, self.container_of(name).name)
        return {"kill": self.commands.kill, "stop": self.commands.stop,
                "start": self.commands.start,
                "restart": self.commands.restart}[verb](replica.service)

    # -- faults ------------------------------------------------------------------------
    async def kill(self, name: str) -> None:
        await asyncio.to_thread(self.run, self._act("kill", name))

    async def stop_service(self, name: str) -> None:
        await asyncio.to_thread(self.run, self._act("stop", name))

    async def start_service(self, name: str) -> float:
        started = time.monotonic()
        await asyncio.to_thread(self.run, self._act("start", name))
        await self._healthy(name)
        return time.monotonic() - started

    async def restart(self, name: str) -> float:
        started = time.monotonic()
        await asyncio.to_thread(self.run, self._act("restart", name))
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
            if container.service == "worker" and host and (
                    container.id.startswith(host) or host.startswith(container.id)):
                return self.worker_names()[container.number - 1]
        return None

    # -- observation -------------------------------------------------------------------
    def rss_mb(self) -> dict[str, float]:
        names = {self.container_of(n).name: n for n in self.memory_services()
                 if any(self.replica(n).service == c.service for c in self.containers)}
        if not names:
            return {}
        by_container = parse_stats(self.run(self.commands.stats(sorted(names)), timeout=30))
        return {names[c]: mib for c, mib in by_container.items() if c in names}

    def collect_logs(self, destination: Path) -> list[Path]:
        destination.mkdir(parents=True, exist_ok=True)
        target = destination / "compose.log"
        target.write_text(self.run(self.commands.logs(), timeout=120))
        return [target]
