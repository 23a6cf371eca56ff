"""``servicekit.server.serve`` with two listeners, as a real process: one lifespan
for both, one graceful stop, and a clear exit when an address is taken."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2e.stack import free_port
from tests.conftest import starts_servers


class Process:
    def __init__(self, tmp_path: Path, public: int, internal: int) -> None:
        self.journal = tmp_path / "journal"
        self.journal.touch()
        self.public = f"http://127.0.0.1:{public}"
        self.internal = f"http://127.0.0.1:{internal}"
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.servicekit.two_listeners", str(self.journal),
             str(public), str(internal)], stderr=subprocess.PIPE, text=True)

    def lines(self) -> list[str]:
        return self.journal.read_text().splitlines()

    def wait_answering(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.popen.poll() is None, self.popen.communicate()[1]
            try:
                httpx.get(self.public, timeout=1.0)
                httpx.get(self.internal, timeout=1.0)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError("the listeners did not answer")


@pytest.fixture
@starts_servers
def process(tmp_path: Path) -> Iterator[Process]:
    running = Process(tmp_path, free_port(), free_port())
    try:
        yield running
    finally:
        if running.popen.poll() is None:
            running.popen.kill()
        running.popen.communicate(timeout=10)


def test_both_listeners_share_one_lifespan_and_stop_together(process: Process) -> None:
    process.wait_answering()
    assert httpx.get(process.public).text == "hello from public"
    assert httpx.get(process.internal).text == "hello from internal"  # the lifespan's state
    assert process.lines() == ["startup"]
    process.popen.send_signal(signal.SIGTERM)
    assert process.popen.wait(15) == -signal.SIGTERM  # the signal, raised again
    assert process.lines() == ["startup", "before shutdown", "shutdown"]
    for url in (process.public, process.internal):
        with pytest.raises(httpx.ConnectError):
            httpx.get(url)


def test_a_request_in_flight_is_answered_before_the_lifespan_ends(process: Process) -> None:
    process.wait_answering()
    answers: list[str] = []
    request = threading.Thread(
        target=lambda: answers.append(httpx.get(f"{process.internal}/slow?s=1").text))
    request.start()
    deadline = time.monotonic() + 5
    while "slow request started" not in process.lines() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.popen.send_signal(signal.SIGTERM)
    request.join(10)
    assert process.popen.wait(15) == -signal.SIGTERM
    assert answers == ["slow"]
    assert process.lines() == ["startup", "slow request started", "before shutdown",
                               "slow request answered", "shutdown"]


@pytest.mark.servers  # our server, as a process
def test_a_taken_address_stops_the_process_and_ends_the_lifespan(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        public = free_port()
        process = Process(tmp_path, public, holder.getsockname()[1])
        _, errors = process.popen.communicate(timeout=20)
    assert process.popen.returncode == 3, errors
    assert "address already in use" in errors
    # the public listener had started: its sockets get the hook, then the lifespan ends
    assert process.lines() == ["startup", "before shutdown", "shutdown"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{public}")
