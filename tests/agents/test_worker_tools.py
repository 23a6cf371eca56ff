"""The built-in tools through the real worker: errors end runs cleanly and the
worker goes on; tools that read data read only the run owner's."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email


async def _ask(client: ChatClient, text: str) -> Any:
    thread = await client.create_thread()
    run = await client.start_run(thread["id"], text)
    return await client.wait_run(run["id"], timeout=30)


async def test_tool_errors_end_cleanly_and_the_next_run_succeeds(target: Target) -> None:
    async with ChatClient(target.auth_url, target.backend_url) as client:
        await client.signup(unique_email("tools"), PASSWORD)
        division = await _ask(client, "what is 1 / 0")
        assert division["status"] == "succeeded"
        assert division["result"].startswith("calculator failed:")
        zone = await _ask(client, "what time is it in Mars/Olympus")
        assert zone["result"] == "clock failed: no time zone named 'Mars/Olympus'"
        paris = await _ask(client, "what time is it in Europe/Paris")
        assert "Europe/Paris" in paris["result"]
        assert (await _ask(client, "what is 2 + 2"))["result"] == "2 + 2 = 4"
        # every call reaches ClickHouse's tool_calls through the ingest stream (the
        # worker appends a run's calls once its terminal event is out)
        url = f"{target.backend_url}/api/analytics/tools"
        for _ in range(100):
            tools = {t["tool"]: t for t in (await client._call("GET", url))["items"]}
            if tools.get("clock", {}).get("calls") == 2 and \
                    tools.get("calculator", {}).get("calls") == 2:
                break
            await asyncio.sleep(0.1)
        assert tools["calculator"]["calls"] == 2 and tools["calculator"]["failures"] == 1
        assert tools["clock"] == {**tools["clock"], "calls": 2, "failures": 1}


async def test_thread_search_finds_only_the_callers_messages(target: Target) -> None:
    marker = f"marker{secrets.token_hex(4)}"
    async with ChatClient(target.auth_url, target.backend_url) as owner, \
            ChatClient(target.auth_url, target.backend_url) as other:
        await owner.signup(unique_email("search-a"), PASSWORD)
        await other.signup(unique_email("search-b"), PASSWORD)
        await _ask(owner, f"what is 6 * 7, {marker}")
        found = await _ask(owner, f'search my messages for "{marker}"')
        assert found["result"].startswith(f"2 of your messages mention '{marker}'"), found
        missed = await _ask(other, f'search my messages for "{marker}"')
        # the other user's own search question is its only message with the marker
        assert missed["result"].startswith(f"1 of your messages mention '{marker}'"), missed
        assert "6 * 7" not in missed["result"]
