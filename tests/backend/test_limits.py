"""Per-user limits against a real stack with small limits: each limit answers its
own error, the abuser's other work goes on within its limits, and another user's
runs are not slowed down (their latency is printed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from e2e.client import ApiError, ChatClient, EventSocket
from e2e.scenarios import PASSWORD, unique_email
from e2e.stack import LocalStack, StackConfig
from tests.conftest import starts_servers

ACTIVE = 5
WAITING = 2
USAGE_PER_MINUTE = 100
HISTORY_PER_HOUR = 2 * 1024 * 1024
FLOOD = "ticks 200 every 1ms of 16384 bytes"  # about 3.3 MB of events
#: another user's run, start to terminal, while the abuser is refused (generous)
OTHER_RUN_BOUND_S = 10.0
LONG = "ticks 400 every 20ms"  # a run of about 8 s


@pytest.fixture(scope="module")
@starts_servers
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    config = StackConfig.for_tests(
        tmp_path_factory.mktemp("limits"),
        env={"BACKEND_MAX_ACTIVE_RUNS_PER_USER": str(ACTIVE),
             "BACKEND_MAX_QUEUED_RUNS_PER_THREAD": str(WAITING),
             "BACKEND_USAGE_RECORDS_PER_MINUTE": str(USAGE_PER_MINUTE),
             "BACKEND_HISTORY_BYTES_PER_HOUR": str(HISTORY_PER_HOUR)})
    with LocalStack(config) as stack:
        yield stack


async def _user(stack: LocalStack, name: str) -> ChatClient:
    client = ChatClient(stack.auth_url, stack.backend_url())
    await client.signup(unique_email(name), PASSWORD)
    return client


@pytest.fixture
async def abuser(limited: LocalStack) -> AsyncIterator[ChatClient]:
    client = await _user(limited, "abuser")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def other(limited: LocalStack) -> AsyncIterator[ChatClient]:
    client = await _user(limited, "other")
    try:
        yield client
    finally:
        await client.aclose()


async def _other_run_s(client: ChatClient, socket: EventSocket, what: str) -> float:
    """Another user's run, start to its terminal event on their socket."""
    thread = await client.create_thread()
    started = time.monotonic()
    run = await client.start_run(thread["id"], "what is 6 * 7")
    terminal = await socket.wait_terminal(run["id"], timeout=30)
    took = time.monotonic() - started
    print(f"\nanother user's run while the abuser hits {what}: {took * 1000:.0f} ms")
    assert terminal["type"] == "agent_completed" and took < OTHER_RUN_BOUND_S
    return took


async def _cancel_all(client: ChatClient, run_ids: list[str]) -> None:
    for run_id in run_ids:
        try:
            await client.cancel_run(run_id)
        except ApiError as exc:
            assert exc.code in ("run_finished", "not_found")
    for run_id in run_ids:
        await client.wait_run(run_id, timeout=30)


async def test_active_runs_per_user(limited: LocalStack, abuser: ChatClient,
                                    other: ChatClient) -> None:
    threads = [await abuser.create_thread() for _ in range(ACTIVE + 5)]
    # concurrent creations on different threads cannot overshoot the limit
    answers = await asyncio.gather(
        *(abuser.start_run(t["id"], LONG, agent="ticker") for t in threads),
        return_exceptions=True)
    runs = [a for a in answers if isinstance(a, dict)]
    accepted = [run["id"] for run in runs]
    refused = [a for a in answers if isinstance(a, ApiError)]
    assert len(accepted) == ACTIVE and len(refused) == 5
    assert {(e.status, e.code) for e in refused} == {(429, "too_many_runs")}
    abuser_socket = await abuser.connect(limited.ws_url())
    other_socket = await other.connect(limited.ws_url())
    try:
        frame = await abuser_socket.request({"type": "start_run", "thread_id": threads[-1]["id"],
                                             "input": "what is 1 + 1"})
        assert frame["type"] == "error" and frame["code"] == "too_many_runs"
        await _other_run_s(other, other_socket, "its active runs")
        # the abuser's runs go on; once one ends, a new one is accepted
        await abuser.cancel_run(accepted[0])
        await abuser.wait_run(accepted[0], timeout=30)
        # on the thread of the run that ended (the other accepted runs' are busy)
        again = await abuser.start_run(runs[0]["thread_id"], "what is 2 + 2")
        assert (await abuser_socket.wait_terminal(again["id"]))["type"] == "agent_completed"
    finally:
        await abuser_socket.close()
        await other_socket.close()
        await _cancel_all(abuser, accepted[1:])


async def test_the_refusal_says_when_to_retry(limited: LocalStack, abuser: ChatClient) -> None:
    threads = [await abuser.create_thread() for _ in range(ACTIVE + 1)]
    runs = [await abuser.start_run(t["id"], LONG, agent="ticker") for t in threads[:ACTIVE]]
    try:
        response = await abuser.http.post(
            f"{abuser.backend_url}/api/threads/{threads[-1]['id']}/runs",
            json={"input": "hi"}, headers={"Authorization": f"Bearer {abuser.access_token}"})
        assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
        assert response.json()["code"] == "too_many_runs"
    finally:
        await _cancel_all(abuser, [r["id"] for r in runs])


async def test_waiting_runs_per_thread(limited: LocalStack, abuser: ChatClient,
                                       other: ChatClient) -> None:
    thread = await abuser.create_thread()
    runs = [await abuser.start_run(thread["id"], LONG, agent="ticker")]
    runs += [await abuser.start_run(thread["id"], "what is 3 * 3", multitask="enqueue")
             for _ in range(WAITING)]
    try:
        with pytest.raises(ApiError) as caught:
            await abuser.start_run(thread["id"], "what is 4 * 4", multitask="enqueue")
        assert caught.value.status == 429 and caught.value.code == "too_many_runs"
        # another thread of the abuser still takes a run (within the active limit)
        elsewhere = await abuser.create_thread()
        runs.append(await abuser.start_run(elsewhere["id"], "what is 5 * 5"))
        assert (await abuser.wait_run(runs[-1]["id"]))["status"] == "succeeded"
        other_socket = await other.connect(limited.ws_url())
        try:
            await _other_run_s(other, other_socket, "its waiting runs")
        finally:
            await other_socket.close()
    finally:
        await _cancel_all(abuser, [r["id"] for r in runs])


async def test_socket_messages_are_rate_limited_and_the_socket_stays_open(
        limited: LocalStack, abuser: ChatClient, other: ChatClient) -> None:
    socket = await abuser.connect(limited.ws_url())
    other_socket = await other.connect(limited.ws_url())
    try:
        for n in range(60):
            await socket.send({"type": "ping", "request_id": f"p{n}"})
        last = await socket.wait_for(lambda f: f.get("request_id") == "p59")
        answers = [r.frame for r in socket.frames if str(r.frame.get("request_id", ""))[:1] == "p"]
        limited_frames = [f for f in answers if f.get("code") == "rate_limited"]
        assert last["code"] == "rate_limited" and 0 < last["retry_after_ms"] <= 1000
        assert 20 <= len(answers) - len(limited_frames) < 30  # the burst, and what refilled
        took = await _other_run_s(other, other_socket, "the socket's message rate")
        # start_run has a tighter bucket: 5 at once, then refused
        threads = [await abuser.create_thread() for _ in range(7)]
        await asyncio.sleep(max(0.0, 2.5 - took))  # the message bucket refills
        for n, thread in enumerate(threads):
            await socket.send({"type": "start_run", "thread_id": thread["id"],
                               "input": "what is 1 + 1", "request_id": f"s{n}"})
        frames = [await _answer(socket, f"s{n}") for n in range(7)]
        assert [f["type"] for f in frames[:5]] == ["run_accepted"] * 5
        assert [f.get("code") for f in frames[5:]] == ["rate_limited"] * 2
        await asyncio.sleep(frames[-1]["retry_after_ms"] / 1000)
        pong = await socket.request({"type": "ping"})
        assert pong["type"] == "pong"  # still open, served again
        await socket.wait_terminals({f["run_id"] for f in frames[:5]})
    finally:
        await socket.close()
        await other_socket.close()


async def _answer(socket: EventSocket, request_id: str) -> dict[str, Any]:
    return await socket.wait_for(lambda f: f.get("request_id") == request_id)


def _records(count: int) -> list[dict[str, object]]:
    ts = datetime.now(UTC).isoformat()
    return [{"ts": ts, "model": "gpt-4o-mini", "prompt_tokens": 10, "completion_tokens": 5,
             "cost_usd": "0.0001", "latency_ms": 100, "status": "ok"}] * count


async def test_usage_records_a_minute(limited: LocalStack, abuser: ChatClient,
                                      other: ChatClient) -> None:
    url = f"{abuser.backend_url}/api/analytics/usage"
    headers = {"Authorization": f"Bearer {abuser.access_token}"}
    second = datetime.now(UTC).second
    if second > 50:  # the windows are whole minutes: all of this within one
        await asyncio.sleep(61 - second)
    assert await abuser.post_usage(_records(60)) == 60
    refused = await abuser.http.post(url, json={"records": _records(60)}, headers=headers)
    assert refused.status_code == 429 and refused.json()["code"] == "quota_exceeded"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert await abuser.post_usage(_records(40)) == 40  # a refused batch did not count
    assert await other.post_usage(_records(USAGE_PER_MINUTE)) == USAGE_PER_MINUTE
    other_socket = await other.connect(limited.ws_url())
    try:
        await _other_run_s(other, other_socket, "its usage records a minute")
    finally:
        await other_socket.close()


async def test_history_bytes_an_hour(limited: LocalStack, abuser: ChatClient,
                                     other: ChatClient) -> None:
    thread = await abuser.create_thread()
    flood = await abuser.start_run(thread["id"], FLOOD, agent="ticker")
    assert (await abuser.wait_run(flood["id"], timeout=60))["status"] == "succeeded"
    with pytest.raises(ApiError) as caught:  # the quota is spent: no new run this hour
        await abuser.start_run(thread["id"], "what is 1 + 1")
    assert caught.value.status == 429 and caught.value.code == "quota_exceeded"
    assert caught.value.retry_after is not None and 1 <= caught.value.retry_after <= 3600
    socket = await abuser.connect(limited.ws_url())
    other_socket = await other.connect(limited.ws_url())
    try:
        frame = await socket.request({"type": "start_run", "thread_id": thread["id"],
                                      "input": "what is 1 + 1"})
        assert frame["type"] == "error" and frame["code"] == "quota_exceeded"
        # what was written stays readable (its newest part, within the history's bounds)
        assert await abuser.run_events(flood["id"])
        await _other_run_s(other, other_socket, "its history bytes an hour")
    finally:
        await socket.close()
        await other_socket.close()
