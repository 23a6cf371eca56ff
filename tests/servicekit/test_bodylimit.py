"""Body limits over real HTTP against the running auth and backend: refused before
the body is read or parsed, before authentication, without holding the body."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from backend.config import BackendSettings
from bridge.protocol import RUN_INPUT_MAX_CHARS
from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, unique_email
from e2e.stack import LocalStack
from servicekit.bodylimit import BodyLimits

BACKEND = BackendSettings()
API_LIMIT = BACKEND.max_body_bytes
USAGE_LIMIT = BACKEND.usage_max_body_bytes
AUTH_LIMIT = 32 * 1024
MiB = 1024 * 1024


@dataclass
class Answer:
    status: int
    body: dict[str, object]
    closed: bool  # the server closed the connection after answering
    sent: int  # body bytes the client managed to send


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def _post(port: int, path: str, headers: dict[str, str], body: Iterable[bytes]) -> Answer:
    """POST over a plain socket: the head, then ``body`` chunk by chunk until the
    server stops taking it, then its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": "127.0.0.1", **headers}.items())
        sock.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode())
        sent = 0
        try:
            for chunk in body:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # refused: the server closed its end
            pass
        return _answer(sock, sent)


def _answer(sock: socket.socket, sent: int) -> Answer:
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"closed without an answer after {sent} bytes"
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert "content-length" in headers, data[:500]
    length = int(headers["content-length"])
    while len(rest) < length:
        rest += sock.recv(65536)
    try:
        closed = sock.recv(1) == b""
    except OSError:
        closed = True
    return Answer(int(lines[0].split()[1]), json.loads(rest[:length]), closed, sent)


def _chunked(total: int, size: int = 64 * 1024, *, finish: bool = True) -> Iterator[bytes]:
    """``total`` bytes of a JSON-ish body in chunks; without the last chunk unless
    ``finish``, so the body never ends."""
    while total > 0:
        piece = b" " * min(size, total)
        total -= len(piece)
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    if finish:
        yield b"0\r\n\r\n"


def _padded(size: int, document: dict[str, object]) -> bytes:
    """A JSON document padded with white space to exactly ``size`` bytes."""
    text = json.dumps(document).encode()
    return text + b" " * (size - len(text))


def _refused(answer: Answer, limit: int) -> None:
    assert answer.status == 413
    assert answer.body["code"] == "payload_too_large"
    assert answer.body["limit_bytes"] == limit
    assert str(limit) in str(answer.body["detail"])
    assert answer.closed


@pytest.fixture
async def client(stack: LocalStack) -> AsyncIterator[ChatClient]:
    async with ChatClient(stack.auth_url, stack.backend_url()) as user:
        await user.signup(unique_email("limits"), PASSWORD)
        yield user


def test_route_limits_fall_back_to_the_default() -> None:
    limits = BodyLimits(default=10, routes={("POST", "/big"): 99})
    assert limits.limit("post", "/big") == 99
    assert limits.limit("PUT", "/big") == 10
    assert limits.limit("POST", "/other") == 10
    with pytest.raises(ValueError, match="negative"):
        BodyLimits(default=-1)


@pytest.mark.parametrize(("service", "path", "limit"), [
    ("backend", "/api/threads", API_LIMIT),
    ("backend", "/api/analytics/usage", USAGE_LIMIT),
    ("auth", "/auth/login", AUTH_LIMIT),
    ("auth", "/auth/register", AUTH_LIMIT),
])
async def test_an_oversized_content_length_is_refused_before_any_byte_of_the_body(
        stack: LocalStack, service: str, path: str, limit: int) -> None:
    url = stack.backend_url() if service == "backend" else stack.auth_url
    headers = {"Content-Type": "application/json", "Content-Length": str(20_000_000),
               "Expect": "100-continue"}
    answer = await asyncio.to_thread(_post, _port(url), path, headers, [])
    _refused(answer, limit)
    assert answer.sent == 0


async def test_a_refusal_is_counted_and_readable_by_the_page(stack: LocalStack) -> None:
    origin = stack.backend_url()  # an allowed origin of auth
    async with httpx.AsyncClient() as http:
        refused = await http.post(f"{stack.auth_url}/auth/login", content=b" " * (AUTH_LIMIT + 1),
                                  headers={"Origin": origin})
        assert refused.status_code == 413
        assert refused.headers["access-control-allow-origin"] == origin
        metrics = (await http.get(f"{stack.auth_internal_url}/metrics")).text
    assert 'route="unmatched",service="auth",status="413"' in metrics


@pytest.mark.parametrize(("service", "path", "limit"), [
    ("backend", "/api/threads", API_LIMIT),
    ("auth", "/auth/login", AUTH_LIMIT),
])
async def test_an_unauthenticated_chunked_body_is_refused_once_it_passes_the_limit(
        stack: LocalStack, service: str, path: str, limit: int) -> None:
    """No Authorization header, a body that never ends: 413 (not 401, not a wait for
    the end), as soon as the cap is passed."""
    url = stack.backend_url() if service == "backend" else stack.auth_url
    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    body = _chunked(limit + 64 * 1024, finish=False)
    answer = await asyncio.to_thread(_post, _port(url), path, headers, body)
    _refused(answer, limit)


async def test_a_body_at_the_limit_is_served(stack: LocalStack, client: ChatClient) -> None:
    assert client.access_token is not None
    bearer = {"Authorization": f"Bearer {client.access_token}"}
    async with httpx.AsyncClient(base_url=stack.backend_url(), headers=bearer) as http:
        exact = _padded(API_LIMIT, {"title": "at the limit"})
        created = await http.post("/api/threads", content=exact,
                                  headers={"Content-Type": "application/json"})
        assert created.status_code == 201, created.text

        async def chunks(size: int) -> AsyncIterator[bytes]:
            body = _padded(size, {"title": "streamed"})
            for start in range(0, len(body), 50_000):
                yield body[start:start + 50_000]

        streamed = await http.post("/api/threads", content=chunks(API_LIMIT),
                                   headers={"Content-Type": "application/json"})
        assert streamed.status_code == 201, streamed.text
        over = await http.post("/api/threads", content=chunks(API_LIMIT + 1),
                               headers={"Content-Type": "application/json"})
        assert over.status_code == 413
        assert over.headers["content-type"] == "application/problem+json"
        assert over.json()["code"] == "payload_too_large"


async def test_the_largest_run_input_fits_the_api_limit(
        stack: LocalStack, client: ChatClient) -> None:
    """32,000 characters, each escaped as a surrogate pair (12 bytes): 384 KB."""
    thread = await client.create_thread()
    body = json.dumps({"input": "\U0001f600" * RUN_INPUT_MAX_CHARS,
                       "agent": "ticker"}).encode()
    assert 380_000 < len(body) < API_LIMIT
    async with httpx.AsyncClient(base_url=stack.backend_url()) as http:
        answer = await http.post(
            f"/api/threads/{thread['id']}/runs", content=body,
            headers={"Authorization": f"Bearer {client.access_token}",
                     "Content-Type": "application/json"})
    assert answer.status_code == 202, answer.text


async def test_a_usage_batch_of_10000_records_fits_its_limit(
        stack: LocalStack, client: ChatClient) -> None:
    record = {"ts": "2025-12-31T23:59:59.999999+00:00", "model": "m" * 100,
              "prompt_tokens": 100_000_000, "completion_tokens": 100_000_000,
              "cost_usd": "1000000.000000", "latency_ms": 86_400_000, "status": "s" * 32}
    body = json.dumps({"records": [record] * 10_000}).encode()
    print(f"\nusage batch of 10,000 records, every field at its longest: {len(body)} bytes "
          f"(limit {USAGE_LIMIT})")
    assert API_LIMIT < len(body) < USAGE_LIMIT
    async with httpx.AsyncClient(base_url=stack.backend_url(), timeout=60) as http:
        answer = await http.post(
            "/api/analytics/usage", content=body,
            headers={"Authorization": f"Bearer {client.access_token}",
                     "Content-Type": "application/json"})
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": 10_000}


async def test_the_internal_listener_has_its_own_limit(stack: LocalStack) -> None:
    headers = {"Content-Length": str(BACKEND.internal_max_body_bytes + 1)}
    port = _port(stack.backend_internal_url())
    answer = await asyncio.to_thread(_post, port, "/internal/users/u/usage", headers, [])
    _refused(answer, BACKEND.internal_max_body_bytes)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_concurrent_huge_uploads_do_not_grow_the_server(stack: LocalStack) -> None:
    """20 unauthenticated 50 MB chunked uploads at once: each is refused after the
    cap, and the backend's memory grows by nowhere near 1 GB."""
    pid = stack.service("backend").process.pid
    assert pid is not None
    port = _port(stack.backend_url())
    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}

    def upload() -> Answer:
        return _post(port, "/api/threads", headers, _chunked(50 * MiB, size=MiB))

    _refused(upload(), API_LIMIT)  # warm: the refusal's own code paths
    time.sleep(0.5)
    before = peak = _rss(pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    answers: list[Answer] = []
    try:
        threads = [threading.Thread(target=lambda: answers.append(upload())) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        done.set()
        sampler.join()
    growth = peak - before
    sent = sum(answer.sent for answer in answers)
    print(f"\nbackend RSS {before / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB during 20 "
          f"concurrent 50 MB chunked uploads: growth {growth / MiB:.1f} MiB; the clients "
          f"got {sent / MiB:.1f} MiB onto the wire before the refusals")
    assert len(answers) == 20
    for answer in answers:
        _refused(answer, API_LIMIT)
    assert growth < 50 * MiB
