"""Delivery through the gateway: drop and resume, isolation at scale, limits, slow sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from e2e.checks import check_all
from e2e.client import ChatClient
from e2e.measure import rss_kib
from e2e.scenarios import PASSWORD, Target, unique_email
from e2e.stack import LocalStack


async def test_a_dropped_client_resumes_without_gap_or_duplicate(target: Target) -> None:
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email("drop"), PASSWORD)
        first = await client.connect(target.ws_url)
        thread = await client.create_thread()
        run = await client.start_run(thread["id"], "ticks 300 every 3ms", agent="ticker")
        await first.wait_for(lambda f: f.get("seq", 0) >= 40)
        await first.close()  # the network drops
        before = first.events
        await asyncio.sleep(0.2)
        second = await client.connect(target.ws_url)
        answer = await second.request({"type": "resume", "after": before[-1]["seq"],
                                       "epoch": first.welcome["epoch"]})
        assert answer["type"] == "resumed"
        await second.wait_terminal(run["id"])
        await second.close()
        events = before + second.events
        assert len(events) == 303
        assert check_all(events, {run["id"]}, client.user["id"], first=1) == []


async def _isolated_user(target: Target, number: int) -> list[str]:
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email(f"iso{number}"), PASSWORD)
        socket = await client.connect(target.ws_url)
        try:
            thread = await client.create_thread()
            marker = f"marker-{number}-{client.user['id']}"
            runs = []
            for text in (f"ticks 15 every 5ms {marker}", f"what is {number} * 3 {marker}"):
                answer = await socket.request({"type": "start_run", "thread_id": thread["id"],
                                               "input": text,
                                               "agent": "ticker" if "ticks" in text else None})
                runs.append(answer["run_id"])
                await socket.wait_terminal(answer["run_id"], timeout=60)
            problems = check_all(socket.events, set(runs), client.user["id"],
                                 first=socket.welcome["last_seq"] + 1)
            started = [e["payload"]["input"] for e in socket.events
                       if e["type"] == "agent_started"]
            problems += [f"{marker} saw input {text!r}" for text in started if marker not in text]
            return problems
        finally:
            await socket.close()


async def test_one_hundred_users_see_only_their_own_events(target: Target) -> None:
    results = await asyncio.gather(*(_isolated_user(target, n) for n in range(100)))
    assert [p for problems in results for p in problems] == []


async def test_too_many_sockets_for_one_user(target: Target) -> None:
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email("many"), PASSWORD)
        sockets = [await client.connect(target.ws_url) for _ in range(10)]
        try:
            ticket = await client.ws_ticket()
            async with connect(target.ws_url) as extra:
                await extra.send(json.dumps({"type": "auth", "ticket": ticket}))
                with contextlib.suppress(ConnectionClosed):
                    async for _ in extra:
                        pass
                assert extra.close_code == 4409
        finally:
            for socket in sockets:
                await socket.close()


class StalledClient:
    """A WebSocket client that authenticates, then stops reading (sans-I/O protocol,
    a blocking socket with a small fixed receive buffer, so the server's side fills)."""

    def __init__(self, url: str) -> None:
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.frames = 0

    def _flush(self) -> None:
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def open(self, ticket: str) -> None:
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while self.protocol.state is not State.OPEN:
            self.protocol.receive_data(self.sock.recv(4096))
        self.protocol.send_text(json.dumps({"type": "auth", "ticket": ticket}).encode())
        self._flush()

    def read_until_closed(self) -> tuple[int | None, str]:
        """Read everything the server sent, then its close frame."""
        while self.protocol.close_rcvd is None:
            data = self.sock.recv(1 << 20)
            if not data:
                break
            self.protocol.receive_data(data)
            self.frames += sum(isinstance(e, Frame) and e.opcode is Opcode.TEXT
                               for e in self.protocol.events_received())
        self.sock.close()
        close = self.protocol.close_rcvd
        return (close.code, close.reason) if close else (None, "")


async def test_a_socket_that_stops_reading_is_closed_and_memory_stays_bounded(
        stack: LocalStack, target: Target) -> None:
    pid = stack.service("backend").process.pid
    assert pid is not None
    async with ChatClient(target.auth_url, target.backend_url) as slow, \
            ChatClient(target.auth_url, target.backend_url) as other:
        await slow.signup(unique_email("slow"), PASSWORD)
        await other.signup(unique_email("other"), PASSWORD)
        rss_before = rss_kib(pid)
        stalled = StalledClient(target.ws_url)
        await asyncio.to_thread(stalled.open, await slow.ws_ticket())
        thread = await slow.create_thread()
        flood = await slow.start_run(thread["id"], "ticks 12000 of 2000 bytes",
                                     agent="ticker")
        watcher = await other.connect(target.ws_url)
        other_thread = await other.create_thread()
        normal = await other.start_run(other_thread["id"], "ticks 100 every 5ms",
                                       agent="ticker")
        await watcher.wait_terminal(normal["id"], timeout=60)
        # another user, meanwhile, got everything in order
        assert check_all(watcher.events, {normal["id"]}, other.user["id"], first=1) == []
        await watcher.close()
        assert (await slow.wait_run(flood["id"], timeout=120))["status"] == "succeeded"
        rss_growth_mib = (rss_kib(pid) - rss_before) / 1024
        code, reason = await asyncio.to_thread(stalled.read_until_closed)
    assert code == 1013, (code, reason, stalled.frames)
    assert reason.startswith("slow consumer; resume after ")
    assert int(reason.rsplit(" ", 1)[1]) == stalled.frames - 1  # the welcome, then events
    assert stalled.frames < 12_000
    assert rss_growth_mib < 64, f"backend RSS grew by {rss_growth_mib:.1f} MiB"
