"""The first end-to-end test: a real user, over HTTP and WebSocket only."""

from e2e.scenarios import Target, agent_flow


async def test_agent_flow(target: Target) -> None:
    result = await agent_flow(target)
    assert result.failures == []
    assert result.metrics["events_received"] == 5
