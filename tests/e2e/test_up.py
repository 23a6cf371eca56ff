"""``python -m e2e up`` (what ``make up`` runs): Ctrl-C or a crash leaves nothing behind,
and the next start finds its data."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import processes_under

pytestmark = pytest.mark.servers  # `python -m e2e up`: the whole stack

PASSWORD = "up test password 1"


def _start(data: Path) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2e", "up", "--ephemeral-ports", "--data", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            text = "".join(lines)
            backend = re.search(r"backend\s+(http://\S+)", text)
            auth = re.search(r"auth\s+(http://\S+)", text)
            assert backend and auth, text
            return proc, backend.group(1), auth.group(1)
    proc.kill()
    raise AssertionError("the stack did not come up:\n" + "".join(lines))


def _wait_gone(root: Path, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := processes_under(root)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_ctrl_c_stops_everything_and_data_survives(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, backend, auth = _start(data)
    try:
        assert httpx.get(f"{backend}/readyz").status_code == 200
        assert httpx.get(f"{auth}/readyz").status_code == 200
        response = httpx.post(f"{auth}/auth/register",
                              json={"email": "keep@example.com", "password": PASSWORD})
        assert response.status_code == 201
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert _wait_gone(data) == []

    proc, backend, auth = _start(data)
    try:
        response = httpx.post(f"{auth}/auth/login",
                              json={"email": "keep@example.com", "password": PASSWORD})
        assert response.status_code == 200, response.text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert _wait_gone(data) == []


def test_a_killed_stack_manager_takes_its_children_along(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, _, _ = _start(data)
    assert len(processes_under(data)) >= 5
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert _wait_gone(data) == []
