"""Named readiness checks: each answers "ready?" once, quickly, without raising."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["AnyNodeReady", "HttpReady", "PostgresReady", "Readiness", "RedisCommandReady",
           "port_is_free", "redis_command"]


class Readiness:
    name: str

    def probe(self) -> bool:
        raise NotImplementedError


def redis_command(port: int, *parts: str, timeout: float = 1.0) -> bytes:
    """Send one command in RESP to a Redis on 127.0.0.1 and return the raw reply."""
    payload = f"*{len(parts)}\r\n".encode() + b"".join(
        f"${len(p.encode())}\r\n{p}\r\n".encode() for p in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(payload)
        return conn.recv(1024)


@dataclass
class RedisCommandReady(Readiness):
    name: str
    port: int
    command: tuple[str, ...]
    expect: bytes

    def probe(self) -> bool:
        try:
            return redis_command(self.port, *self.command).startswith(self.expect)
        except OSError:
            return False


@dataclass
class AnyNodeReady(Readiness):
    """One node of a Redis Cluster answers ``expect`` (the one owning the key; the
    others answer ``MOVED``)."""

    name: str
    ports: tuple[int, ...]
    command: tuple[str, ...]
    expect: bytes

    def probe(self) -> bool:
        for port in self.ports:
            try:
                if redis_command(port, *self.command).startswith(self.expect):
                    return True
            except OSError:
                continue
        return False


@dataclass
class PostgresReady(Readiness):
    name: str
    bin_dir: Path
    port: int

    def probe(self) -> bool:
        result = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            capture_output=True, check=False)
        return result.returncode == 0


@dataclass
class HttpReady(Readiness):
    name: str
    url: str

    def probe(self) -> bool:
        try:
            return httpx.get(self.url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
