"""Child processes of the local stack: spawn, signal, tail logs, never orphan.

Every child gets its own session (Ctrl-C in the terminal reaches only the stack
manager, which stops children in order) and a parent-death signal, so a stack
manager that is killed outright takes its children with it. Their pids are also
written to a file that the next start reads to reap what a crash left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

__all__ = ["ManagedProcess", "reap_recorded", "tail"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None]:
    def preexec() -> None:
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    return preexec


def tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ManagedProcess:
    """One child process with its log file."""

    def __init__(self, name: str, log_path: Path, pidfile: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._pidfile = pidfile
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def spawn(self, argv: list[str], *, env: dict[str, str], cwd: Path,
              user: str | None = None, death_signal: int = signal.SIGTERM) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start {' '.join(argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, user=user,
                preexec_fn=_die_with_parent(death_signal))
        _record(self._pidfile, self.popen.pid)

    def send(self, sig: int) -> None:
        if self.running():
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal, wait up to ``timeout``, then SIGKILL; returns the exit code."""
        if self.popen is None:
            return None
        self.send(sig)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            code = self.popen.wait(10)
        _forget(self._pidfile, self.popen.pid)
        return code

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.stop(signal.SIGKILL, timeout=10)


def _record(pidfile: Path, pid: int) -> None:
    with pidfile.open("a") as f:
        f.write(f"{pid}\n")


def _forget(pidfile: Path, pid: int) -> None:
    with contextlib.suppress(OSError):
        kept = [line for line in pidfile.read_text().split() if line != str(pid)]
        pidfile.write_text("".join(f"{p}\n" for p in kept))


def reap_recorded(pidfile: Path, root: Path) -> list[int]:
    """Kill the process groups a crashed stack manager left behind; returns their pids.

    A recorded pid counts only while its working directory is still ``root``
    (every child runs there), so a reused pid of another program is left alone.
    """
    reaped = []
    with contextlib.suppress(OSError):
        for line in pidfile.read_text().split():
            pid = int(line)
            try:
                if not os.readlink(f"/proc/{pid}/cwd").startswith(str(root)):
                    continue
                os.killpg(pid, signal.SIGKILL)
                reaped.append(pid)
            except (OSError, ProcessLookupError):
                continue
        pidfile.unlink()
    return reaped
