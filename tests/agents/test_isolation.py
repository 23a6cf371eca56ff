"""200 concurrent supervisor runs of 50 users on one worker: every answer holds its
own user's figures and nobody else's (checked against each user's own records)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

from agents.pricing import cents
from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email
from e2e.usage import generate, totals
from tests.waiting import usage_visible

USERS, RUNS_EACH = 50, 4
QUESTION = "What did I spend on each model over the last 7 days?"
_LINE = re.compile(r"^- \S+: [\d,]+ requests, \$[\d,.]+$", re.MULTILINE)


async def _user(target: Target, n: int) -> tuple[ChatClient, set[str], int]:
    client = ChatClient(target.auth_url, target.backend_url, timeout=60)
    await client.signup(unique_email(f"iso{n}"), PASSWORD)
    records = generate(f"isolation-{n}", 5, per_day=4 + n % 7)
    await client.post_usage(records)
    since = datetime.now(UTC) - timedelta(days=7)
    expected = {f"- {model}: {count:,} requests, {cents(cost)}"
                for model, (count, cost) in totals(records, since=since).items()}
    return client, expected, len(records)


async def _ask(client: ChatClient) -> str:
    thread = await client.create_thread()
    run = await client.start_run(thread["id"], QUESTION)
    final = await client.wait_run(run["id"], timeout=120)
    assert final["status"] == "succeeded", final
    result: str = final["result"]
    return result


async def test_each_answer_holds_only_its_own_users_figures(target: Target) -> None:
    users = await asyncio.gather(*(_user(target, n) for n in range(USERS)))
    try:
        await asyncio.gather(*(usage_visible(client, posted) for client, _, posted in users))
        answers = await asyncio.gather(*(_ask(client) for client, _, _ in users
                                         for _ in range(RUNS_EACH)))
        for index, answer in enumerate(answers):
            _, expected, _ = users[index // RUNS_EACH]
            assert set(_LINE.findall(answer)) == expected, (index, answer, expected)
    finally:
        await asyncio.gather(*(client.aclose() for client, _, _ in users))
