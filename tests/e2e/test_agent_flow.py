"""The quickest end-to-end proof: a real user, over HTTP and WebSocket only."""

from e2e.scenarios import Target, arithmetic_flow


async def test_arithmetic_flow(target: Target) -> None:
    result = await arithmetic_flow(target)
    assert result.failures == []
    assert result.metrics["events_received"] == 5
