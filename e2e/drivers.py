"""Stack drivers: one interface over "where the stack runs", so scenarios are the
same code on the local stack and on docker compose.

A scenario only asks a driver for addresses, for a service to be killed, stopped,
started or restarted by name, and for memory figures when the driver has them.
Service names follow the local stack: ``postgres``, ``redis``, ``auth``, then
``backend`` / ``worker`` (or ``backend-1``, ``backend-2`` … when there are several).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from e2e.measure import rss_kib
from e2e.processes import tail
from e2e.redis_cluster import master_of
from e2e.stack import LocalStack, StackConfig

__all__ = ["LocalDriver", "Shape", "StackDriver", "replica_names"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Shape:
    """How many backends and workers a run needs, and how many runs a worker takes
    at once (the worker's ``WORKER_CONCURRENCY``)."""

    backends: int = 1
    workers: int = 1
    worker_concurrency: int = 50

    def union(self, other: Shape) -> Shape:
        return Shape(max(self.backends, other.backends), max(self.workers, other.workers),
                     max(self.worker_concurrency, other.worker_concurrency))


def replica_names(service: str, count: int) -> list[str]:
    """``["backend"]`` for one, ``["backend-1", "backend-2"]`` for two: the local stack's
    names, which every driver uses."""
    return [service] if count == 1 else [f"{service}-{n}" for n in range(1, count + 1)]


class StackDriver(abc.ABC):
    """A running stack, as scenarios see it."""

    kind: str
    #: how memory is read ("/proc VmRSS" …), or None when this driver cannot
    memory_source: str | None = None
    #: whether ``start_timings`` has each service's own start (not the whole stack's)
    per_service_start = True
    #: whether Redis is a Redis Cluster (``redis_url`` names one of its nodes)
    redis_cluster = False

    def __init__(self, shape: Shape, progress: Progress | None = None) -> None:
        self.shape = shape
        self.progress = progress or (lambda _: None)
        #: service → seconds from start to ready (what the driver could measure)
        self.start_timings: dict[str, float] = {}

    def __enter__(self) -> StackDriver:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- lifecycle of the whole stack ---------------------------------------------------
    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    # -- addresses ---------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def auth_url(self) -> str: ...

    @property
    @abc.abstractmethod
    def redis_url(self) -> str: ...

    @abc.abstractmethod
    def backend_url(self, replica: int = 1) -> str: ...

    def ws_url(self, replica: int = 1) -> str:
        return self.backend_url(replica).replace("http", "ws", 1) + "/ws"

    def backend_names(self) -> list[str]:
        return replica_names("backend", self.shape.backends)

    def worker_names(self) -> list[str]:
        return replica_names("worker", self.shape.workers)

    def http_services(self) -> dict[str, str]:
        """Service → base URL, for every service that answers /readyz."""
        urls = {"auth": self.auth_url}
        for replica, name in enumerate(self.backend_names(), start=1):
            urls[name] = self.backend_url(replica)
        return urls

    def secrets(self) -> dict[str, str]:
        """Name → value of every secret the stack was given (the suite checks that no
        log line carries one)."""
        return {}

    def redis_names(self) -> list[str]:
        """The Redis services: ``redis``, or a cluster's nodes."""
        return ["redis"]

    def redis_master_of(self, key: str) -> str:
        """The Redis Cluster node (service) holding ``key`` as master now."""
        raise NotImplementedError(f"{self.kind} stacks run one Redis")

    def memory_services(self) -> list[str]:
        """The services whose memory the driver reports."""
        return [*self.redis_names(), "auth", *self.backend_names(), *self.worker_names()]

    # -- faults ------------------------------------------------------------------------
    @abc.abstractmethod
    async def kill(self, name: str) -> None:
        """SIGKILL, as a crash would."""

    @abc.abstractmethod
    async def stop_service(self, name: str) -> None:
        """A clean stop (SIGTERM and wait)."""

    @abc.abstractmethod
    async def start_service(self, name: str) -> float:
        """Start a stopped service and wait until it is ready; the seconds it took."""

    @abc.abstractmethod
    def is_running(self, name: str) -> bool:
        """Whether the service's process (or container) runs."""

    @abc.abstractmethod
    def worker_service(self, worker_id: str) -> str | None:
        """The service name of the worker that calls itself ``worker_id`` (the value
        of a run's lease), or None."""

    # -- observation -------------------------------------------------------------------
    def rss_mb(self) -> dict[str, float]:
        """Resident memory per service in MB; empty when the driver cannot tell."""
        return {}

    def collect_logs(self, destination: Path) -> list[Path]:
        """Copy the services' logs under ``destination``; the files written."""
        return []


class LocalDriver(StackDriver):
    """The local stack (:class:`e2e.stack.LocalStack`) in a folder of its own, on free
    ports; the folder is removed afterwards unless it was given."""

    kind = "local"
    memory_source = "/proc/<pid>/status VmRSS of each service's process"

    def __init__(self, shape: Shape, progress: Progress | None = None, *,
                 root: Path | None = None, startup_timeout_s: float = 60.0,
                 redis_cluster: bool = False) -> None:
        super().__init__(shape, progress)
        self.redis_cluster = redis_cluster
        self._owns_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="agentchat-e2e-")) if root is None else root
        config = StackConfig.for_tests(
            self.root, backends=shape.backends, workers=shape.workers,
            startup_timeout_s=startup_timeout_s, redis_cluster=redis_cluster,
            env={"WORKER_CONCURRENCY": str(shape.worker_concurrency)})
        self.stack = LocalStack(config, progress=self.progress)

    def start(self) -> None:
        self.stack.start()
        self.start_timings = dict(self.stack.timings)

    def stop(self) -> None:
        self.stack.stop()
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def auth_url(self) -> str:
        return self.stack.auth_url

    @property
    def redis_url(self) -> str:
        return self.stack.redis_url

    def backend_url(self, replica: int = 1) -> str:
        return self.stack.backend_url(replica)

    def redis_names(self) -> list[str]:
        return self.stack.redis_names

    def redis_master_of(self, key: str) -> str:
        port = master_of(self.stack.redis_cluster_ports, key)
        return f"redis-{self.stack.redis_cluster_ports.index(port) + 1}"

    def ws_url(self, replica: int = 1) -> str:
        return self.stack.ws_url(replica)

    async def kill(self, name: str) -> None:
        self.stack.kill(name)

    async def stop_service(self, name: str) -> None:
        await asyncio.to_thread(self.stack.stop_service, name)

    async def start_service(self, name: str) -> float:
        return await self.stack.astart_service(name)

    def is_running(self, name: str) -> bool:
        return self.stack.service(name).process.running()

    def worker_service(self, worker_id: str) -> str | None:
        return worker_id if worker_id in self.worker_names() else None

    def secrets(self) -> dict[str, str]:
        return {"BACKEND_INTERNAL_TOKEN": self.stack.internal_token}

    def rss_mb(self) -> dict[str, float]:
        figures = {}
        for name in self.memory_services():
            pid = self.stack.service(name).process.pid
            if pid is None or not self.stack.service(name).process.running():
                continue
            with contextlib.suppress(OSError, ProcessLookupError):
                figures[name] = rss_kib(pid) / 1024
        return figures

    def collect_logs(self, destination: Path) -> list[Path]:
        destination.mkdir(parents=True, exist_ok=True)
        written = []
        for log in sorted(self.stack.logs.glob("*.log")):
            target = destination / log.name
            target.write_text(tail(log, lines=2000) + "\n")
            written.append(target)
        return written
