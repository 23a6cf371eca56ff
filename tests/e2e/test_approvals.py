"""Tool approval on the real stack: a call of a tool that needs approval pauses its
run, the user answers over the socket or REST, and the run goes on on any worker;
unanswered, it is cancelled at its deadline; waiting, it survives a worker killed
with SIGKILL and a backend restart, and is never declared lost."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from e2e.checks import check_all, check_run_invariants, check_schema
from e2e.client import ApiError, ChatClient, EventSocket
from e2e.scenarios import PASSWORD, unique_email
from e2e.stack import LocalStack, StackConfig
from tests.conftest import starts_servers

#: the deadline of an approval on this stack: long enough for a backend restart
APPROVAL_TIMEOUT_S = 25


@pytest.fixture(scope="module")
@starts_servers
def approval_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    env = {"WORKER_APPROVAL_TOOLS": '["calculator"]',
           "WORKER_APPROVAL_TIMEOUT_S": str(APPROVAL_TIMEOUT_S)}
    with LocalStack(StackConfig.for_tests(tmp_path_factory.mktemp("approvals"),
                                          env=env)) as stack:
        yield stack


@pytest.fixture
async def socket(client: ChatClient, approval_stack: LocalStack) -> AsyncIterator[EventSocket]:
    """The user's socket, open for the test."""
    opened = await client.connect(approval_stack.ws_url())
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def client(approval_stack: LocalStack) -> AsyncIterator[ChatClient]:
    async with ChatClient(approval_stack.auth_url, approval_stack.backend_url()) as user:
        await user.signup(unique_email("approve"), PASSWORD)
        yield user


async def _asked(socket: EventSocket, run_id: str) -> dict[str, Any]:
    event = await socket.wait_for(lambda f: f.get("run_id") == run_id
                                  and f.get("type") == "approval_required", timeout=60)
    payload: dict[str, Any] = event["payload"]
    return payload


async def _start(client: ChatClient, text: str = "what is 6 * 7") -> dict[str, Any]:
    thread = await client.create_thread()
    run: dict[str, Any] = await client.start_run(thread["id"], text)
    return run


async def test_approved_on_the_socket_the_call_runs_and_the_run_completes(
        client: ChatClient, approval_stack: LocalStack,
        socket: EventSocket) -> None:
    run = await _start(client)
    asked = await _asked(socket, run["id"])
    assert asked["tool"] == "calculator" and asked["arguments"] == {"expression": "6 * 7"}
    waiting = await client.run(run["id"])  # a REST client sees the call too
    assert waiting["status"] == "running" and waiting["pending_approval"] == asked
    answer = await socket.request({"type": "approve_tool", "run_id": run["id"],
                                   "call_id": asked["call_id"]})
    assert answer == {"type": "approval_accepted", "run_id": run["id"],
                      "call_id": asked["call_id"], "approved": True,
                      "request_id": answer["request_id"]}
    await socket.wait_terminal(run["id"], timeout=60)
    events = socket.run_events(run["id"])
    types = [e["type"] for e in events]
    assert types.index("approval_required") < types.index("tool_executing")
    executing = next(e for e in events if e["type"] == "tool_executing")
    assert executing["payload"]["call_id"] == asked["call_id"]
    assert types[-1] == "agent_completed"
    assert events[-1]["payload"]["result"] == "6 * 7 = 42"
    assert check_all(socket.events, {run["id"]}, client.user["id"]) == []
    # answered once: the same answer again is refused, clearly
    again = await socket.request({"type": "approve_tool", "run_id": run["id"],
                                  "call_id": asked["call_id"]})
    assert again["type"] == "error" and again["code"] == "run_finished"
    final = await client.wait_run(run["id"])
    assert final["status"] == "succeeded" and final["result"] == "6 * 7 = 42"
    assert "pending_approval" not in final
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{approval_stack.backend_internal_url()}/metrics")).text
    approved = re.search(r'^tool_approvals_total\{outcome="approved"\} (\S+)$', metrics, re.M)
    assert approved is not None and float(approved.group(1)) >= 1


async def test_rejected_over_rest_the_call_never_runs(client: ChatClient,
                                                      socket: EventSocket) -> None:
    run = await _start(client)
    asked = await _asked(socket, run["id"])
    with pytest.raises(ApiError) as wrong:
        await client.answer_approval(run["id"], "tcl_not_this_one", approve=False)
    assert wrong.value.status == 409 and wrong.value.code == "approval_not_pending"
    answer = await client.answer_approval(run["id"], asked["call_id"], approve=False)
    assert answer == {"run_id": run["id"], "call_id": asked["call_id"], "approved": False}
    with pytest.raises(ApiError) as twice:
        await client.answer_approval(run["id"], asked["call_id"], approve=True)
    assert twice.value.status == 409
    await socket.wait_terminal(run["id"], timeout=60)
    events = socket.run_events(run["id"])
    assert "tool_executing" not in [e["type"] for e in events]
    completed = next(e for e in events if e["type"] == "tool_completed")["payload"]
    assert completed["call_id"] == asked["call_id"] and completed["ok"] is False
    assert completed["error"]["code"] == "rejected"
    assert check_all(socket.events, {run["id"]}, client.user["id"]) == []


async def test_another_user_can_neither_answer_nor_see_the_call(
        client: ChatClient, approval_stack: LocalStack,
        socket: EventSocket) -> None:
    run = await _start(client)
    asked = await _asked(socket, run["id"])
    async with ChatClient(approval_stack.auth_url, approval_stack.backend_url()) as other:
        await other.signup(unique_email("intruder"), PASSWORD)
        for approve in (True, False):
            with pytest.raises(ApiError) as caught:
                await other.answer_approval(run["id"], asked["call_id"], approve=approve)
            assert caught.value.status == 404 and caught.value.code == "not_found"
        intruder = await other.connect(approval_stack.ws_url())
        try:
            refused = await intruder.request({"type": "approve_tool", "run_id": run["id"],
                                              "call_id": asked["call_id"]})
            assert refused["type"] == "error" and refused["code"] == "not_found"
        finally:
            await intruder.close()
    with pytest.raises(ApiError) as malformed:
        await client._call("POST", f"{client.backend_url}/api/runs/{run['id']}/approvals/"
                           f"{asked['call_id']}", json={"approve": "yes please"})
    assert malformed.value.status == 422
    # still waiting for its owner: a cancel ends it at once, with no worker involved
    await client.cancel_run(run["id"])
    terminal = await socket.wait_terminal(run["id"], timeout=20)
    assert terminal["type"] == "agent_cancelled" and terminal["payload"] == {"by": "user"}
    assert check_all(socket.events, {run["id"]}, client.user["id"]) == []
    assert (await client.wait_run(run["id"]))["status"] == "cancelled"


async def test_unanswered_the_run_is_cancelled_at_its_deadline(
        client: ChatClient, socket: EventSocket) -> None:
    run = await _start(client)
    asked = await _asked(socket, run["id"])
    terminal = await socket.wait_terminal(run["id"], timeout=APPROVAL_TIMEOUT_S + 30)
    assert terminal["type"] == "agent_cancelled"
    assert terminal["payload"] == {"by": "approval_timeout"}
    assert terminal["ts"] >= asked["expires_at"]
    with pytest.raises(ApiError) as late:
        await client.answer_approval(run["id"], asked["call_id"], approve=True)
    assert late.value.status == 409 and late.value.code == "run_finished"
    assert check_all(socket.events, {run["id"]}, client.user["id"]) == []
    assert (await client.wait_run(run["id"]))["status"] == "cancelled"


async def test_a_waiting_run_survives_a_killed_worker_and_a_backend_restart(
        client: ChatClient, approval_stack: LocalStack) -> None:
    socket = await client.connect(approval_stack.ws_url())
    try:
        run = await _start(client)
        asked = await _asked(socket, run["id"])
    finally:
        await socket.close()
    approval_stack.kill("worker")
    await approval_stack.arestart("backend")
    # longer than the reaper's grace for a run without a lease: a waiting run is not lost
    await asyncio.sleep(8)
    assert (await client.run(run["id"]))["status"] == "running"
    await approval_stack.astart_service("worker")  # any worker resumes it
    await client.answer_approval(run["id"], asked["call_id"], approve=True)
    final = await client.wait_run(run["id"], timeout=60)
    assert final["status"] == "succeeded" and final["result"] == "6 * 7 = 42"
    events = await client.run_events(run["id"])
    assert check_schema(events) == [] and check_run_invariants(events, [run["id"]]) == []
    types = [e["type"] for e in events]
    assert types.count("agent_started") == 1 and types[-1] == "agent_completed"
    assert [e["payload"]["call_id"] for e in events if e["type"] == "tool_executing"] \
        == [asked["call_id"]]


async def test_deleting_its_thread_ends_a_waiting_run(client: ChatClient,
                                                     socket: EventSocket) -> None:
    run = await _start(client)
    await _asked(socket, run["id"])
    await client._call("DELETE", f"{client.backend_url}/api/threads/{run['thread_id']}")
    terminal = await socket.wait_terminal(run["id"], timeout=20)
    assert terminal["type"] == "agent_cancelled" and terminal["payload"] == {"by": "user"}
    assert check_all(socket.events, {run["id"]}, client.user["id"]) == []


async def test_an_interrupt_ends_a_waiting_run_and_the_new_one_runs(
        client: ChatClient, socket: EventSocket) -> None:
    run = await _start(client)
    await _asked(socket, run["id"])
    newer = await client.start_run(run["thread_id"], "hello", multitask="interrupt")
    terminal = await socket.wait_terminal(run["id"], timeout=20)
    assert terminal["type"] == "agent_cancelled"
    assert terminal["payload"] == {"by": "interrupt"}
    assert (await socket.wait_terminal(newer["id"], timeout=30))["type"] \
        == "agent_completed"
    assert check_all(socket.events, {run["id"], newer["id"]}, client.user["id"]) == []
