"""GET /api/runs/{id}/events: one run's events, in pages, whatever else the user ran."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from e2e.client import ApiError, ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email


@pytest.fixture
async def client(target: Target) -> AsyncIterator[ChatClient]:
    async with ChatClient(target.auth_url, target.backend_url) as user:
        await user.signup(unique_email("events"), PASSWORD)
        yield user


async def _page(client: ChatClient, run_id: str, **params: Any) -> Any:
    return await client._call("GET", f"{client.backend_url}/api/runs/{run_id}/events",
                              params=params)


async def test_pages_walk_every_event_of_the_run_once(client: ChatClient,
                                                      target: Target) -> None:
    socket = await client.connect(target.ws_url)
    try:
        threads = [await client.create_thread() for _ in range(2)]
        runs = await asyncio.gather(*(  # interleaved in the user's history
            client.start_run(t["id"], "ticks 30 every 5ms", agent="ticker") for t in threads))
        await socket.wait_terminals({r["id"] for r in runs})
        for run in runs:
            walked, after, pages = [], 0, 0
            while True:
                page = await _page(client, run["id"], after=after, limit=7)
                walked.extend(page["items"])
                pages += 1
                if page["next_after"] is None:
                    break
                assert page["next_after"] > after
                after = page["next_after"]
            assert walked == socket.run_events(run["id"])  # each once, in order
            assert {e["run_id"] for e in walked} == {run["id"]}
            assert walked[-1]["type"] == "agent_completed" and pages >= len(walked) // 7
    finally:
        await socket.close()


async def test_the_default_page_and_a_cursor_within_the_run(client: ChatClient) -> None:
    thread = await client.create_thread()
    run = await client.start_run(thread["id"], "ticks 5", agent="ticker")
    await client.wait_run(run["id"])
    first = await _page(client, run["id"])
    events = first["items"]
    assert first["next_after"] is None and len(events) == 8
    later = await _page(client, run["id"], after=events[3]["seq"], limit=2)
    assert later["items"] == events[4:6] and later["next_after"] == events[5]["seq"]


@pytest.mark.parametrize("after", ["-1", "abc", "99999999999999999999999", "1.5"])
async def test_a_bad_cursor_is_a_422_naming_it(client: ChatClient, after: str) -> None:
    thread = await client.create_thread()
    run = await client.start_run(thread["id"], "what is 1 + 1")
    with pytest.raises(ApiError) as caught:
        await _page(client, run["id"], after=after)
    assert caught.value.status == 422
    assert ["query", "after"] in [e["loc"] for e in caught.value.body["errors"]]


@pytest.mark.parametrize("limit", ["0", "1001"])
async def test_a_limit_out_of_range_is_a_422(client: ChatClient, limit: str) -> None:
    thread = await client.create_thread()
    run = await client.start_run(thread["id"], "what is 1 + 1")
    with pytest.raises(ApiError) as caught:
        await _page(client, run["id"], limit=limit)
    assert caught.value.status == 422
