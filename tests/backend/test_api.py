"""The REST API against the running stack: auth, ownership, validation, pagination."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from e2e.client import ApiError, ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email


@pytest.fixture
async def client(target: Target) -> AsyncIterator[ChatClient]:
    async with ChatClient(target.auth_url, target.backend_url) as user:
        await user.signup(unique_email("api"), PASSWORD)
        yield user


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("authorization", [
    None, "Bearer nonsense", "Basic dXNlcjpwYXNz",
    "Bearer " + _b64({"alg": "none", "typ": "JWT"}) + "." + _b64({"sub": "usr_x"}) + ".",
])
async def test_api_needs_a_valid_token(target: Target, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{target.backend_url}/api/threads", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unauthorized"


async def test_another_users_resources_are_not_found(target: Target, client: ChatClient) -> None:
    thread = await client.create_thread("mine")
    run = await client.start_run(thread["id"], "what is 1 + 1")
    async with ChatClient(target.auth_url, target.backend_url) as other:
        await other.signup(unique_email("intruder"), PASSWORD)
        for call in (other.run(run["id"]), other.messages(thread["id"]),
                     other.start_run(thread["id"], "hi")):
            with pytest.raises(ApiError) as caught:
                await call
            assert caught.value.status == 404 and caught.value.code == "not_found"
    await client.wait_run(run["id"])


async def test_validation_errors_name_the_fields(client: ChatClient) -> None:
    thread = await client.create_thread()
    with pytest.raises(ApiError) as caught:
        await client._call("POST", f"{client.backend_url}/api/threads/{thread['id']}/runs",
                           json={"input": "", "multitask": "sometimes"})
    assert caught.value.status == 422
    fields = {tuple(e["loc"]) for e in caught.value.body["errors"]}
    assert fields == {("body", "input"), ("body", "multitask")}


async def test_threads_are_paginated_newest_first(client: ChatClient) -> None:
    created = [(await client.create_thread(f"t{i}"))["id"] for i in range(5)]
    url = f"{client.backend_url}/api/threads"
    first = await client._call("GET", url, params={"limit": 3})
    second = await client._call("GET", url, params={"limit": 3, "cursor": first["next_cursor"]})
    seen = [t["id"] for t in first["items"] + second["items"]]
    assert seen == list(reversed(created)) and second["next_cursor"] is None


async def test_a_run_records_its_messages(client: ChatClient) -> None:
    thread = await client.create_thread()
    run = await client.start_run(thread["id"], "what is 12 * 12")
    assert run["status"] == "queued" and run["thread_id"] == thread["id"]
    final = await client.wait_run(run["id"])
    assert final["status"] == "succeeded" and final["result"] == "12 * 12 = 144"
    contents = [(m["role"], m["content"]) for m in await client.messages(thread["id"])]
    assert contents == [("user", "what is 12 * 12"), ("assistant", "12 * 12 = 144")]


async def test_unknown_agent_is_refused(client: ChatClient) -> None:
    thread = await client.create_thread()
    with pytest.raises(ApiError) as caught:
        await client.start_run(thread["id"], "hi", agent="nonexistent")
    assert caught.value.status == 422 and caught.value.code == "unknown_agent"


async def test_a_runs_events_over_rest(client: ChatClient, target: Target) -> None:
    thread = await client.create_thread()
    runs = [await client.start_run(thread["id"], "what is 5 * 5")]
    await client.wait_run(runs[0]["id"])
    runs.append(await client.start_run(thread["id"], "ticks 5", agent="ticker"))
    await client.wait_run(runs[1]["id"])
    url = f"{client.backend_url}/api/runs/{runs[1]['id']}/events"
    events = (await client._call("GET", url))["items"]
    assert [e["type"] for e in events] == (["agent_started", "agent_thinking"]
                                           + ["partial_result"] * 5 + ["agent_completed"])
    assert {e["run_id"] for e in events} == {runs[1]["id"]}
    later = (await client._call("GET", url, params={"after": events[3]["seq"]}))["items"]
    assert later == events[4:]
    async with ChatClient(target.auth_url, target.backend_url) as other:
        await other.signup(unique_email("peek"), PASSWORD)
        with pytest.raises(ApiError) as caught:
            await other._call("GET", url)
        assert caught.value.status == 404


async def test_rename_and_delete_a_thread(client: ChatClient, target: Target) -> None:
    thread = await client.create_thread("old")
    url = f"{client.backend_url}/api/threads/{thread['id']}"
    renamed = await client._call("PATCH", url, json={"title": "new"})
    assert renamed["title"] == "new" and renamed["id"] == thread["id"]
    assert (await client._call("GET", url))["title"] == "new"
    run = await client.start_run(thread["id"], "ticks 200 every 20ms", agent="ticker")
    async with ChatClient(target.auth_url, target.backend_url) as other:
        await other.signup(unique_email("vandal"), PASSWORD)
        for method in ("PATCH", "DELETE"):
            with pytest.raises(ApiError) as caught:
                await other._call(method, url, json={"title": "x"})
            assert caught.value.status == 404
    assert await client._call("DELETE", url) is None
    for call in (client._call("GET", url), client.messages(thread["id"]), client.run(run["id"])):
        with pytest.raises(ApiError) as caught:
            await call
        assert caught.value.status == 404


async def test_agents_and_their_tool_schemas(client: ChatClient) -> None:
    agents = {a["name"]: a for a in (await client._call(
        "GET", f"{client.backend_url}/api/agents"))["items"]}
    assert {"supervisor", "ticker"} <= set(agents)
    calculator = next(t for t in agents["supervisor"]["tools"] if t["name"] == "calculator")
    assert calculator["parameters"]["required"] == ["expression"]
    assert calculator["parameters"]["properties"]["expression"]["type"] == "string"


async def test_text_that_cannot_be_stored_is_a_422(client: ChatClient) -> None:
    with pytest.raises(ApiError) as caught:
        await client.create_thread("nul \x00 inside")
    assert caught.value.status == 422 and caught.value.code == "validation_error"
    with pytest.raises(ApiError) as caught:  # in a path, where no body model can look
        await client._call("GET", f"{client.backend_url}/api/threads/thr_%00x")
    assert caught.value.status == 422 and caught.value.code == "invalid_text"
