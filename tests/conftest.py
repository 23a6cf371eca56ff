"""Shared fixtures: real servers, started once per session (or module) on free ports.

A fixture that starts a server (Postgres, Redis, ClickHouse or chDB, one of our
services, a browser, a Docker project) is decorated with :func:`starts_servers`;
every test whose fixture closure holds one is marked ``servers`` at collection, so
``pytest -m "not servers"`` (``make check``) runs only the tests that start nothing.
A test that starts a server itself, without such a fixture, carries the mark by hand.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from e2e.redis_cluster import cluster_server_bin
from e2e.scenarios import Target
from e2e.stack import LocalStack, StackConfig
from servicekit.redisclient import make_redis
from tests.prerequisites import Prerequisite

F = TypeVar("F", bound=Callable[..., object])
#: the attribute :func:`starts_servers` sets on a fixture's function
_STARTS_SERVERS = "_starts_servers"


def _no_redis_7() -> str | None:
    try:
        cluster_server_bin()
    except RuntimeError as exc:
        return str(exc)
    return None


#: the Redis Cluster tests need a Redis 7+ server (Debian's ``redis-server``): without
#: one they are skipped with a closing banner, and with ``CI=true`` they fail
REDIS_7 = Prerequisite("redis7", tests="Redis Cluster tests", what="Redis 7+ server",
                       how="install Debian's redis-server (`apt-get install redis-server`)",
                       missing=_no_redis_7)


@pytest.fixture(scope="session")
def redis7() -> Path:
    """A Redis 7+ server binary (a cluster's nodes run it)."""
    return cluster_server_bin()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    REDIS_7.setup(item)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    REDIS_7.summary(terminalreporter)


def starts_servers(fixture: F) -> F:
    """Declare that a fixture starts a server: put it under ``@pytest.fixture``."""
    setattr(fixture, _STARTS_SERVERS, True)
    return fixture


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``servers`` every test with a server-starting fixture in its closure."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        for name in getattr(item, "fixturenames", ()):
            if any(getattr(d.func, _STARTS_SERVERS, False)
                   for d in info.name2fixturedefs.get(name, ())):
                item.add_marker(pytest.mark.servers)
                break


@pytest.fixture(scope="session")
@starts_servers
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A real redis-server, alone (for the bridge's and runtime's tests)."""
    stack = LocalStack(StackConfig.for_tests(tmp_path_factory.mktemp("redis")))
    stack.start(only=("redis",))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
@starts_servers
def redis_cluster(redis7: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A Redis Cluster of three masters with a replica each, formed (one per module:
    a test may kill its nodes)."""
    config = StackConfig.for_tests(tmp_path_factory.mktemp("cluster"), redis_cluster=True)
    stack = LocalStack(config)
    stack.start(only=tuple(f"redis-{n}" for n in range(1, 7)))
    try:
        yield stack
    finally:
        stack.stop()


@contextlib.asynccontextmanager
async def emptied(url: str) -> AsyncIterator[Redis]:
    """A client of the Redis at ``url``, its database emptied first."""
    client = make_redis(url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def redis(redis_server: LocalStack) -> AsyncIterator[Redis]:
    async with emptied(redis_server.redis_url) as client:
        yield client


@pytest.fixture(scope="session")
@starts_servers
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The whole local stack, shared by the tests that do not break it."""
    with LocalStack(StackConfig.for_tests(tmp_path_factory.mktemp("stack"))) as running:
        yield running


@pytest.fixture(scope="session")
def target(stack: LocalStack) -> Target:
    return Target(stack.auth_url, stack.backend_url(), stack.ws_url())


def processes_under(root: Path) -> list[str]:
    """Processes whose working directory is under ``root`` (children of a stack)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if str(proc.joinpath("cwd").readlink()).startswith(str(root)):
                found.append(f"{proc.name}: {proc.joinpath('cmdline').read_bytes()[:80]!r}")
        except OSError:
            continue
    return found
