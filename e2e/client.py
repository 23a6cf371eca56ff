"""A real client of the contract: REST over httpx, events over websockets.

It records every frame with its arrival time, so scenarios can check order,
completeness and latency of what a user actually received.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bridge.events import TERMINAL_TYPES

__all__ = ["ApiError", "ChatClient", "EventSocket", "Received"]

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
#: times a call answered ``503 busy`` is tried again after its ``Retry-After``
BUSY_RETRIES = 30


def _busy(response: httpx.Response, body: Any) -> bool:
    return (response.status_code == 503 and isinstance(body, dict)
            and body.get("code") == "busy")


class ApiError(Exception):
    def __init__(self, status: int, body: Any, retry_after: float | None = None) -> None:
        self.status = status
        self.body = body
        self.retry_after = retry_after  # the answer's Retry-After, in seconds
        self.code = body.get("code") if isinstance(body, dict) else None
        super().__init__(f"HTTP {status}: {body}")


@dataclass(frozen=True)
class Received:
    frame: dict[str, Any]
    at: float  # time.monotonic() on arrival
    wall: float = 0.0  # time.time() on arrival: compared with an event's ``ts``


class ChatClient:
    def __init__(self, auth_url: str, backend_url: str, *, timeout: float = 10.0) -> None:
        self.auth_url = auth_url.rstrip("/")
        self.backend_url = backend_url.rstrip("/")
        self.http = httpx.AsyncClient(timeout=timeout)
        self.access_token: str | None = None
        self.refresh_token: str | None = None
        self.user: dict[str, Any] = {}

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, url: str, *, auth: bool = True, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if auth and self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        for attempt in itertools.count():
            response = await self.http.request(method, url, headers=headers, **kwargs)
            body = response.json() if response.content else None
            if _busy(response, body) and attempt < BUSY_RETRIES:
                # the auth service's Argon2id lane is full: it asks to come back
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            if response.status_code >= 400:
                retry_after = response.headers.get("Retry-After")
                raise ApiError(response.status_code, body,
                               float(retry_after) if retry_after else None)
            return body

    # -- auth --------------------------------------------------------------------------
    async def register(self, email: str, password: str, display_name: str = "") -> Any:
        return await self._call("POST", f"{self.auth_url}/auth/register", auth=False,
                                json={"email": email, "password": password,
                                      "display_name": display_name})

    async def login(self, email: str, password: str) -> Any:
        body = await self._call("POST", f"{self.auth_url}/auth/login", auth=False,
                                json={"email": email, "password": password})
        self.access_token = body["access_token"]
        self.refresh_token = body["refresh_token"]
        self.user = body["user"]
        return body

    async def signup(self, email: str, password: str) -> Any:
        """Register (if new) and log in."""
        try:
            await self.register(email, password)
        except ApiError as exc:
            if exc.code != "email_taken":
                raise
        return await self.login(email, password)

    async def refresh(self) -> Any:
        """Trade the refresh token for a new pair."""
        body = await self._call("POST", f"{self.auth_url}/auth/refresh", auth=False,
                                json={"refresh_token": self.refresh_token})
        self.access_token = body["access_token"]
        self.refresh_token = body["refresh_token"]
        return body

    async def logout(self) -> None:
        await self._call("POST", f"{self.auth_url}/auth/logout", json={})

    async def logout_all(self) -> None:
        await self._call("POST", f"{self.auth_url}/auth/logout-all")

    async def sessions(self) -> Any:
        return await self._call("GET", f"{self.auth_url}/auth/sessions")

    async def delete_session(self, session_id: str) -> None:
        await self._call("DELETE", f"{self.auth_url}/auth/sessions/{session_id}")

    async def ws_ticket(self) -> str:
        body = await self._call("POST", f"{self.auth_url}/auth/ws-ticket")
        ticket: str = body["ticket"]
        return ticket

    # -- backend -----------------------------------------------------------------------
    async def create_thread(self, title: str = "") -> Any:
        return await self._call("POST", f"{self.backend_url}/api/threads", json={"title": title})

    async def start_run(self, thread_id: str, text: str, agent: str | None = None,
                        multitask: str = "reject") -> Any:
        body: dict[str, Any] = {"input": text, "multitask": multitask}
        if agent:
            body["agent"] = agent
        return await self._call("POST", f"{self.backend_url}/api/threads/{thread_id}/runs",
                                json=body)

    async def run(self, run_id: str) -> Any:
        return await self._call("GET", f"{self.backend_url}/api/runs/{run_id}")

    async def wait_run(self, run_id: str, *, timeout: float = 30.0) -> Any:
        """The run once it reached a final status (polling)."""
        deadline = time.monotonic() + timeout
        while True:
            run = await self.run(run_id)
            if run["status"] in FINAL_STATUSES or time.monotonic() > deadline:
                return run
            await asyncio.sleep(0.05)

    async def cancel_run(self, run_id: str) -> Any:
        return await self._call("POST", f"{self.backend_url}/api/runs/{run_id}/cancel")

    async def answer_approval(self, run_id: str, call_id: str, *, approve: bool) -> Any:
        return await self._call("POST",
                                f"{self.backend_url}/api/runs/{run_id}/approvals/{call_id}",
                                json={"approve": approve})

    async def messages(self, thread_id: str) -> Any:
        body = await self._call("GET", f"{self.backend_url}/api/threads/{thread_id}/messages")
        return body["items"]

    async def threads(self) -> Any:
        body = await self._call("GET", f"{self.backend_url}/api/threads")
        return body["items"]

    async def thread(self, thread_id: str) -> Any:
        return await self._call("GET", f"{self.backend_url}/api/threads/{thread_id}")

    async def run_events(self, run_id: str, after: int = 0) -> Any:
        """The run's events still in the user's history (what the server sent): every
        page, up to the run's end or the history's end."""
        items: list[Any] = []
        while True:
            body = await self._call("GET", f"{self.backend_url}/api/runs/{run_id}/events",
                                    params={"after": after, "limit": 1000})
            items.extend(body["items"])
            if body["next_after"] is None or body["next_after"] == after:
                return items
            after = body["next_after"]

    async def analytics_runs(self) -> Any:
        body = await self._call("GET", f"{self.backend_url}/api/analytics/runs")
        return body["items"]

    async def post_usage(self, records: list[dict[str, Any]]) -> int:
        """Post usage records, 10,000 a call (after the Retry-After of a `quota_exceeded`);
        returns how many were accepted."""
        accepted = 0
        for start in range(0, len(records), 10_000):
            for attempt in itertools.count():
                try:
                    body = await self._call("POST", f"{self.backend_url}/api/analytics/usage",
                                            json={"records": records[start:start + 10_000]})
                    break
                except ApiError as exc:  # over the user's records a minute: wait
                    if exc.code != "quota_exceeded" or exc.retry_after is None or attempt >= 3:
                        raise
                    await asyncio.sleep(exc.retry_after)
            accepted += int(body["accepted"])
        return accepted

    async def usage(self, group_by: str = "model", **params: Any) -> Any:
        return await self._call("GET", f"{self.backend_url}/api/analytics/usage",
                                params={"group_by": group_by, **params})

    async def usage_requests(self) -> int:
        """How many of the caller's usage records ClickHouse holds (any time)."""
        items = (await self.usage(**{"from": "2000-01-01T00:00:00Z"}))["items"]
        return sum(int(i["requests"]) for i in items)

    async def connect(self, ws_url: str, *, origin: str | None = None,
                      use_ticket: bool = True,
                      resume: dict[str, Any] | None = None) -> EventSocket:
        """An authenticated socket; ``resume`` (``{"after", "epoch"}``) rides in the
        auth message, so the replay comes before any live event."""
        socket = EventSocket(ws_url)
        auth: dict[str, Any] = ({"type": "auth", "ticket": await self.ws_ticket()} if use_ticket
                                else {"type": "auth", "token": self.access_token})
        if resume is not None:
            auth["resume"] = resume
        await socket.open(auth, origin=origin)
        return socket


@dataclass
class EventSocket:
    url: str
    frames: list[Received] = field(default_factory=list)
    welcome: dict[str, Any] = field(default_factory=dict)
    close_code: int | None = None
    close_reason: str | None = None
    _conn: ClientConnection | None = None
    _reader: asyncio.Task[None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [r.frame for r in self.frames if "seq" in r.frame]

    async def open(self, auth: dict[str, Any], *, origin: str | None = None) -> None:
        headers = {"Origin": origin} if origin else None
        self._conn = await connect(self.url, additional_headers=headers, max_size=2**22)
        await self._conn.send(json.dumps(auth))
        self._reader = asyncio.create_task(self._read())
        self.welcome = await self.wait_for(lambda f: f.get("type") == "welcome", timeout=10)

    async def _read(self) -> None:
        assert self._conn is not None
        try:
            async for message in self._conn:
                frame = json.loads(message)
                self.frames.append(Received(frame, time.monotonic(), time.time()))
                async with self._changed:
                    self._changed.notify_all()
        except Exception:  # the connection ended; close_code tells how
            pass
        finally:
            self.close_code = self._conn.close_code
            self.close_reason = self._conn.close_reason
            async with self._changed:
                self._changed.notify_all()

    async def send(self, frame: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(frame))

    async def send_raw(self, text: str) -> None:
        assert self._conn is not None
        await self._conn.send(text)

    async def request(self, frame: dict[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
        """Send a frame with a fresh request_id and return the answer that echoes it."""
        request_id = f"req-{next(self._ids)}"
        await self.send({**frame, "request_id": request_id})
        return await self.wait_for(lambda f: f.get("request_id") == request_id, timeout=timeout)

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], *,
                       timeout: float = 10.0, start: int = 0) -> dict[str, Any]:
        """The first frame (from index ``start``) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                for received in self.frames[start:]:
                    if predicate(received.frame):
                        return received.frame
                if self.close_code is not None or (self._reader and self._reader.done()):
                    raise ConnectionError(f"socket closed ({self.close_code}) while waiting")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no matching frame in time")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_terminal(self, run_id: str, *, timeout: float = 30.0) -> dict[str, Any]:
        return await self.wait_for(
            lambda f: f.get("run_id") == run_id and f.get("type") in TERMINAL_TYPES,
            timeout=timeout)

    async def wait_terminals(self, run_ids: set[str], *, timeout: float = 30.0) -> None:
        """Until every run in ``run_ids`` ended. One pass over the frames however many
        runs: waiting on each run with :meth:`wait_terminal` rescans every frame at
        every arrival, which a socket carrying thousands of events cannot afford."""
        pending, index = set(run_ids), 0
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                while index < len(self.frames):
                    frame = self.frames[index].frame
                    index += 1
                    if frame.get("type") in TERMINAL_TYPES:
                        pending.discard(frame.get("run_id", ""))
                if not pending:
                    return
                if self.close_code is not None or (self._reader and self._reader.done()):
                    raise ConnectionError(f"socket closed ({self.close_code}) while "
                                          f"{len(pending)} runs were still going")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(pending)} runs did not end in time")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["run_id"] == run_id]

    async def wait_closed(self, *, timeout: float = 10.0) -> int | None:
        if self._reader is not None:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    async def abort(self) -> None:
        """Drop the connection without a closing handshake, as a lost network does."""
        if self._conn is not None:
            self._conn.transport.abort()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
