"""The compose healthcheck commands, run as they are against the local stack."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from e2e.stack import LocalStack
from tests.test_compose import SERVICES


def _run(argv: list[str], env: dict[str, str] | None = None) -> int:
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True,
                          timeout=30, check=False).returncode


def test_http_healthchecks_pass(stack: LocalStack) -> None:
    for name, url in (("auth", stack.auth_url), ("backend", stack.backend_url())):
        argv = SERVICES[name]["healthcheck"]["test"][1:]
        port = argv[-1].split(":")[2].split("/")[0]
        assert _run([*argv[:-1], argv[-1].replace(f"127.0.0.1:{port}", url[7:])]) == 0
    assert _run(["python", "-m", "servicekit.probe", f"{stack.auth_url}/nope"]) == 1


def test_worker_healthcheck_passes_only_while_the_heartbeat_file_is_fresh(
        tmp_path: Path) -> None:
    """The shell command of docker-compose.yml (``$$`` is Compose's escaped ``$``),
    on a file the worker's heartbeat touches (tests/agents/test_worker.py)."""
    kind, command = SERVICES["worker"]["healthcheck"]["test"]
    alive = tmp_path / "worker.alive"
    shell = command.replace("$$", "$").replace("/tmp/worker.alive", str(alive))
    assert kind == "CMD-SHELL"

    def check() -> int:
        return subprocess.run(["sh", "-c", shell], timeout=30, check=False).returncode

    assert check() == 1  # no file: no heartbeat yet, or the worker exited
    alive.touch()
    assert check() == 0
    stale = time.time() - 60
    os.utime(alive, (stale, stale))
    assert check() == 1  # the heartbeat stopped


def test_metrics_count_requests_by_route_template(stack: LocalStack) -> None:
    import httpx

    assert httpx.get(f"{stack.backend_url()}/api/threads/thr_nope").status_code == 401
    text = httpx.get(f"{stack.backend_internal_url()}/metrics").text  # the internal listener
    assert ('http_requests_total{route="/api/threads/{thread_id}",service="backend",'
            'status="401"}') in text
    assert 'http_request_duration_seconds_count{route="/api/threads/{thread_id}"' in text
