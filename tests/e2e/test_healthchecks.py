"""The compose healthcheck commands, run as they are against the local stack."""

from __future__ import annotations

import os
import subprocess
import sys

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


def test_worker_healthcheck_passes_only_for_a_live_worker(stack: LocalStack) -> None:
    argv = SERVICES["worker"]["healthcheck"]["test"][1:]
    env = {**os.environ, "WORKER_REDIS_URL": stack.redis_url}
    assert _run(argv, {**env, "WORKER_WORKER_ID": "worker"}) == 0
    assert _run(argv, {**env, "WORKER_WORKER_ID": "no-such-worker"}) == 1


def test_metrics_count_requests_by_route_template(stack: LocalStack) -> None:
    import httpx

    assert httpx.get(f"{stack.backend_url()}/api/threads/thr_nope").status_code == 401
    text = httpx.get(f"{stack.backend_internal_url()}/metrics").text  # the internal listener
    assert ('http_requests_total{route="/api/threads/{thread_id}",service="backend",'
            'status="401"}') in text
    assert 'http_request_duration_seconds_count{route="/api/threads/{thread_id}"' in text
