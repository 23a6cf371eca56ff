"""The page renews its socket's authorization before it expires: with access tokens
living 8 s, it stays connected for several lifetimes without a reconnect, and a
run streaming all along arrives whole."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tests.web.conftest import SHORT_TOKEN_TTL_S
from tests.web.test_browser import ask, expect, new_thread, record_connection_states, sign_up
from tests.web.test_browser import ticks as tick_text

if TYPE_CHECKING:
    from tests.web.conftest import Web

LIFETIMES = 4
TICKS = 300  # every 100 ms: 30 s, longer than LIFETIMES * 8 s after the start


def test_the_page_stays_connected_past_several_token_lifetimes(
        web_with_short_tokens: Web) -> None:
    page = web_with_short_tokens.page
    sign_up(page)
    conn = page.locator("#conn")
    record_connection_states(page)
    first_deadline = int(conn.get_attribute("data-expires-at") or 0)
    assert 0 < first_deadline - time.time() <= SHORT_TOKEN_TTL_S + 1
    new_thread(page)
    run = ask(page, f"ticks {TICKS} every 100ms", agent="ticker")

    deadlines = {first_deadline}
    until = time.monotonic() + LIFETIMES * SHORT_TOKEN_TTL_S
    while time.monotonic() < until:
        deadlines.add(int(conn.get_attribute("data-expires-at") or 0))
        page.wait_for_timeout(500)
    assert len(deadlines) >= LIFETIMES, deadlines  # renewed about every 6.4 s
    assert max(deadlines) > time.time()

    expect(run).to_have_attribute("data-status", "succeeded", timeout=60_000)
    assert run.locator(".stream").text_content() == tick_text(TICKS)
    states = page.evaluate("() => window.connectionStates")
    assert states == ["connected"], states  # never closed, never reconnected
    web_with_short_tokens.screenshot("renewed-socket")
