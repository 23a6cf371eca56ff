"""The Redis Cluster tests need a Redis 7+ server (Debian's ``redis-server``): without
one they are skipped with a closing banner, and with ``CI=true`` they fail."""

from __future__ import annotations

import pytest

from e2e.redis_cluster import cluster_server_bin
from tests.prerequisites import Prerequisite


def _missing() -> str | None:
    try:
        cluster_server_bin()
    except RuntimeError as exc:
        return str(exc)
    return None


REDIS_7 = Prerequisite("redis_cluster", tests="Redis Cluster tests", what="Redis 7+ server",
                       how="install Debian's redis-server (`apt-get install redis-server`)",
                       missing=_missing)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    REDIS_7.setup(item)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    REDIS_7.summary(terminalreporter)
