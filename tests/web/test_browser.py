"""The web page in a real browser against the real local stack: sign-in, threads, live
runs (the supervisor's pipeline, a backend restart mid-run, cancel, a busy thread),
and the usage chart. Screenshots of the main states go to reports/screenshots/."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from e2e.stack import LocalStack
from e2e.usage import generate, totals

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

    from tests.web.conftest import Web

PASSWORD = "a long browser password 42"
TICKS = 300
# what Chromium itself logs while the backend is down (the page handles both)
SOCKET_REFUSED = r"WebSocket connection to '.*' failed"
FETCH_REFUSED = r"Failed to load resource: net::ERR_CONNECTION_REFUSED"


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def unique_email(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


def sign_up(page: Page, name: str = "Ada") -> str:
    email = unique_email("web")
    page.goto("/")
    page.click("#switch-mode")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.fill("#display-name", name)
    page.click("#login-submit")
    expect(page.locator("#app-view")).to_be_visible()
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    return email


def new_thread(page: Page) -> None:
    count = page.locator("#threads li").count()
    page.click("#new-thread")
    expect(page.locator("#threads li")).to_have_count(count + 1)
    expect(page.locator("#input")).to_be_enabled()


def ask(page: Page, text: str, agent: str = "supervisor") -> Locator:
    """Send ``text`` to ``agent``; returns the new run's view."""
    runs = page.locator("article.run")
    count = runs.count()
    page.select_option("#agent", agent)
    page.fill("#input", text)
    page.press("#input", "Enter")
    expect(runs).to_have_count(count + 1)
    run_id = runs.nth(count).get_attribute("data-run-id")
    return page.locator(f'article.run[data-run-id="{run_id}"]')


def ticks(count: int) -> str:
    return "".join(f"tick {n} " for n in range(1, count + 1))


def seqs(run: Locator) -> list[int]:
    found: list[int] = run.locator(".ev").evaluate_all("els => els.map(e => +e.dataset.seq)")
    return found


def record_connection_states(page: Page) -> None:
    page.evaluate("""() => {
        const el = document.getElementById('conn');
        window.connectionStates = [el.dataset.state];
        new MutationObserver(() => window.connectionStates.push(el.dataset.state))
            .observe(el, {attributes: true, attributeFilter: ['data-state']});
    }""")


def seed_usage(stack: LocalStack, email: str, days: int = 7) -> list[dict[str, Any]]:
    """Usage records for the user over the last ``days``, once queries see them all."""
    records = generate(email, days)
    backend = stack.backend_url()
    with httpx.Client(timeout=30) as http:
        login = http.post(f"{stack.auth_url}/auth/login",
                          json={"email": email, "password": PASSWORD})
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        http.post(f"{backend}/api/analytics/usage", json={"records": records},
                  headers=headers).raise_for_status()
        since = (datetime.now(UTC) - timedelta(days=days + 1)).isoformat()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answer = http.get(f"{backend}/api/analytics/usage", headers=headers,
                              params={"group_by": "model", "from": since})
            if answer.status_code == 200 and sum(
                    i["requests"] for i in answer.json()["items"]) == len(records):
                return records
            time.sleep(0.3)
    raise AssertionError("the usage records did not become visible within 30 s")


def test_register_log_in_reload_and_log_out(web: Web) -> None:
    page = web.page
    response = page.goto("/")
    assert response is not None and response.ok
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    connect = policy.split("connect-src ", 1)[1].split(";", 1)[0].split()
    assert web.stack.auth_url in connect
    assert web.stack.ws_url().removesuffix("/ws") in connect

    email = sign_up(page, "Ada")
    expect(page.locator("#who")).to_have_text("Ada")
    web.screenshot("signed-in")

    page.reload()  # the session survives: the tab's refresh token buys a new access token
    expect(page.locator("#app-view")).to_be_visible()
    expect(page.locator("#who")).to_have_text("Ada")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    assert page.evaluate("() => localStorage.length") == 0

    page.click("#logout")
    expect(page.locator("#login-view")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('agentchat.refresh_token')") is None
    expect(page.locator("#conn")).to_have_attribute("data-state", "offline")
    page.reload()
    expect(page.locator("#login-view")).to_be_visible()

    web.console.expect(r"status of 401")  # the wrong password below
    page.fill("#email", email)
    page.fill("#password", "not the password at all")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_be_visible()
    web.screenshot("login-refused")
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    expect(page.locator("#who")).to_have_text("Ada")


def test_threads_are_created_renamed_and_deleted(web: Web) -> None:
    page = web.page
    sign_up(page)
    new_thread(page)
    expect(page.locator("#thread-title")).to_have_text("New thread")

    page.click("#rename")
    page.fill("#rename-input", "Groceries")
    page.press("#rename-input", "Enter")
    expect(page.locator("#thread-title")).to_have_text("Groceries")
    expect(page.locator("#threads .thread.is-current")).to_have_text("Groceries")

    new_thread(page)
    expect(page.locator("#threads .thread")).to_have_text(["New thread", "Groceries"])
    page.click("#delete")
    expect(page.locator("#delete")).to_have_text("Delete for good?")
    page.click("#delete")
    expect(page.locator("#threads .thread")).to_have_text(["Groceries"])
    expect(page.locator("#thread-title")).to_have_text("Groceries")

    page.reload()
    expect(page.locator("#threads .thread")).to_have_text(["Groceries"])
    expect(page.locator("#thread-title")).to_have_text("Groceries")


def test_arithmetic_shows_each_step_and_391(web: Web) -> None:
    page = web.page
    sign_up(page)
    new_thread(page)
    run = ask(page, "what is 17 * 23")
    expect(run).to_have_attribute("data-status", "succeeded")
    expect(run.locator(".final-text")).to_have_text("17 * 23 = 391")
    expect(run.locator(".ev-agent_thinking")).to_have_count(1)

    tool = run.locator("details.tool")
    expect(tool).to_have_count(1)
    expect(tool.locator(".tool-name")).to_have_text("calculator")
    assert tool.evaluate("d => d.open") is False  # folded until asked for
    tool.locator("summary").click()
    expect(tool.locator("pre.json").first).to_contain_text('"expression": "17 * 23"')
    expect(tool.locator("pre.json").last).to_contain_text('"value": 391')
    assert set(run.locator(".ev").evaluate_all("els => els.map(e => e.dataset.agent)")) == {
        "supervisor"}
    assert seqs(run) == sorted(set(seqs(run)))
    web.screenshot("arithmetic")

    page.reload()  # from REST now: the question and the stored answer
    expect(page.locator("#thread-title")).to_have_text("what is 17 * 23")
    expect(page.locator(".bubble.user")).to_have_text(["what is 17 * 23"])
    expect(page.locator(".bubble.assistant")).to_have_text(["17 * 23 = 391"])


def test_the_supervisor_pipeline_shows_each_agent_and_tool_call(web: Web) -> None:
    page = web.page
    email = sign_up(page)
    seed_usage(web.stack, email)
    new_thread(page)
    run = ask(page, "What did I spend on each model over the last 7 days, and how can I cut it?")
    expect(run).to_have_attribute("data-status", "succeeded", timeout=60_000)

    agents = run.locator(".ev").evaluate_all("els => els.map(e => e.dataset.agent)")
    stages = [a for a in dict.fromkeys(agents) if a in {"triage", "data", "optimization",
                                                         "report"}]
    assert stages == ["triage", "data", "optimization", "report"], agents
    tools = run.locator(".ev-tool_executing")
    assert tools.count() >= 2
    for n in range(tools.count()):
        expect(tools.nth(n)).to_have_class("ev ev-tool_executing ok")
        expect(tools.nth(n).locator(".tool-state")).to_contain_text("ok")
    tool_agents = set(tools.evaluate_all("els => els.map(e => e.dataset.agent)"))
    assert {"data", "optimization"} <= tool_agents, tool_agents
    answer = run.locator(".stream, .final-text").first
    expect(answer).to_contain_text("$")
    page.set_viewport_size({"width": 1280, "height": 1280})  # the whole run in one picture
    page.locator(".bubble.user").last.scroll_into_view_if_needed()
    web.publish(web.screenshot("pipeline"), "run-view.png")
    tools.first.locator("summary").click()
    expect(tools.first.locator("pre.json").last).to_contain_text('"items"')


def test_a_backend_restart_mid_run_resumes_without_a_duplicate(web: Web) -> None:
    page = web.page
    web.console.expect(SOCKET_REFUSED)
    web.console.expect(FETCH_REFUSED)
    sign_up(page)
    new_thread(page)
    run = ask(page, f"ticks {TICKS} every 20ms", agent="ticker")
    stream = run.locator(".stream")
    expect(stream).to_contain_text("tick 20 ")
    record_connection_states(page)

    web.stack.restart("backend")

    expect(run).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(page.locator("#conn")).to_have_attribute("data-state", "resumed")
    assert stream.text_content() == ticks(TICKS)  # each tick once, in order
    expect(run.locator(".final-text")).to_have_text(f"streamed {TICKS} ticks")
    assert seqs(run) == sorted(set(seqs(run)))
    states = page.evaluate("() => window.connectionStates")
    assert "reconnecting" in states and states[-2:] == ["resuming", "resumed"], states
    web.screenshot("resumed-after-restart")


def test_a_reload_mid_run_shows_the_run_whole(web: Web) -> None:
    page = web.page
    sign_up(page)
    new_thread(page)
    run = ask(page, f"ticks {TICKS} every 20ms", agent="ticker")
    expect(run.locator(".stream")).to_contain_text("tick 30 ")
    page.reload()
    run = page.locator("article.run").last
    expect(run).to_have_attribute("data-status", "succeeded", timeout=60_000)
    assert run.locator(".stream").text_content() == ticks(TICKS)
    assert seqs(run) == sorted(set(seqs(run)))


def test_a_running_run_is_cancelled(web: Web) -> None:
    page = web.page
    sign_up(page)
    new_thread(page)
    run = ask(page, "ticks 3000 every 20ms", agent="ticker")
    expect(run.locator(".stream")).to_contain_text("tick 5 ")
    run.locator("button.cancel").click()
    expect(run).to_have_attribute("data-status", "cancelled")
    expect(run.locator(".ev-agent_cancelled")).to_have_count(1)
    expect(run.locator("button.cancel")).to_be_hidden()
    assert "tick 3000 " not in (run.locator(".stream").text_content() or "")
    web.screenshot("cancelled")


def _ask_a_busy_thread(web: Web, ticker_input: str) -> tuple[Page, Locator]:
    """A ticker run streaming on a new thread, then a question on that thread:
    the page is told the thread is busy. Returns the page and the ticker's run."""
    page = web.page
    web.console.expect(r"status of 409")  # thread_busy, answered by the choice offered
    sign_up(page)
    new_thread(page)
    first = ask(page, ticker_input, agent="ticker")
    expect(first.locator(".stream")).to_contain_text("tick 5 ")
    page.select_option("#agent", "supervisor")
    page.fill("#input", "what is 6 * 7")
    page.press("#input", "Enter")
    return page, first


def test_a_busy_thread_offers_to_interrupt(web: Web) -> None:
    page, first = _ask_a_busy_thread(web, "ticks 3000 every 20ms")
    expect(page.locator("#busy")).to_be_visible()
    web.screenshot("thread-busy")
    page.click("#busy-interrupt")
    expect(page.locator("#busy")).to_be_hidden()
    expect(first).to_have_attribute("data-status", "cancelled")
    expect(first.locator(".ev-agent_cancelled")).to_contain_text("cancelled by a newer run")
    second = page.locator("article.run").nth(1)
    expect(second).to_have_attribute("data-status", "succeeded")
    expect(second.locator(".final-text")).to_have_text("6 * 7 = 42")


def test_a_busy_thread_offers_to_queue(web: Web) -> None:
    page, first = _ask_a_busy_thread(web, "ticks 150 every 20ms")
    page.click("#busy-enqueue")
    second = page.locator("article.run").nth(1)
    expect(second).to_have_attribute("data-status", "queued")
    expect(page.locator("#input")).to_have_value("")
    expect(first).to_have_attribute("data-status", "succeeded")
    expect(second).to_have_attribute("data-status", "succeeded")
    expect(second.locator(".final-text")).to_have_text("6 * 7 = 42")
    assert first.locator(".stream").text_content() == ticks(150)


def test_the_usage_view_charts_spend_per_model_and_per_day(web: Web) -> None:
    page = web.page
    email = sign_up(page)
    records = seed_usage(web.stack, email)
    per_model = totals(records)
    page.click("#show-usage")
    bars = page.locator("#usage-body svg.chart g.bar")
    expect(bars).to_have_count(len(per_model))
    assert set(bars.evaluate_all("els => els.map(e => e.dataset.key)")) == set(per_model)
    rows = page.locator("#usage-body tbody tr")
    shown = {rows.nth(n).locator("th").text_content(): rows.nth(n).locator("td").first
             .text_content() for n in range(rows.count())}
    assert shown == {model: f"{count:,}" for model, (count, _) in per_model.items()}
    web.screenshot("usage-per-model")

    page.select_option("#usage-group", "day")
    days = sorted({datetime.fromisoformat(r["ts"]).astimezone(UTC).date().isoformat()
                   for r in records})
    expect(bars).to_have_count(len(days))
    keys = bars.evaluate_all("els => els.map(e => e.dataset.key)")
    assert [key[:10] for key in keys] == days
    page.select_option("#usage-metric", "requests")
    assert sum(int(v.replace(",", "")) for v in page.locator(
        "#usage-body .bar-value").all_text_contents()) == len(records)
    web.screenshot("usage-per-day")


def test_lost_history_makes_the_page_resync_and_reload(web_on_own_stack: Web) -> None:
    """Redis comes back empty mid-run: the epoch changes, the page is told to resync,
    reloads the thread over REST and goes on live in the new epoch."""
    web = web_on_own_stack
    page = web.page
    sign_up(page)
    new_thread(page)
    first = ask(page, "what is 17 * 23")
    expect(first).to_have_attribute("data-status", "succeeded")
    run = ask(page, "ticks 300 every 15ms", agent="ticker")
    expect(run.locator(".stream")).to_contain_text("tick 30 ")
    record_connection_states(page)

    web.stack.stop_service("redis")
    web.stack.start_service("redis", wipe=True)

    page.wait_for_function("() => window.connectionStates.includes('resync')",
                           timeout=30_000)
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    # the thread was drawn anew from REST; the ticker run ends (its early ticks are
    # lost): wait for its final status, not for no run drawn as running (while the
    # thread is redrawn there is none, and the thread may still be busy)
    ticker = page.locator("article.run").filter(has_text=re.compile(r"tick \d+ ")).last
    expect(ticker).to_have_attribute(
        "data-status", re.compile(r"^(succeeded|failed|cancelled|timed_out)$"),
        timeout=60_000)
    expect(page.locator(".bubble.user")).to_have_text(["what is 17 * 23",
                                                       "ticks 300 every 15ms"])
    expect(page.locator(".bubble.assistant").first).to_have_text("17 * 23 = 391")
    again = ask(page, "what is 6 * 7")
    expect(again).to_have_attribute("data-status", "succeeded")
    expect(again.locator(".final-text")).to_have_text("6 * 7 = 42")
    web.screenshot("resynced")


def test_a_call_waiting_for_approval_is_approved_or_rejected_on_the_page(
        web_on_own_stack: Web) -> None:
    """The clock needs approval on this stack: the page shows the pending call with its
    arguments and Approve and Reject; each answer goes on with the run."""
    page = web_on_own_stack.page
    sign_up(page)
    new_thread(page)
    run = ask(page, "what time is it in Europe/Paris")
    card = run.locator(".approval")
    expect(card).to_be_visible()
    expect(card.locator(".tool-name")).to_have_text("clock")
    expect(card.locator("pre.json")).to_contain_text('"timezone": "Europe/Paris"')
    expect(run).to_have_attribute("data-status", "running")
    web_on_own_stack.screenshot("approval-pending")
    card.get_by_role("button", name="Approve").click()
    expect(run).to_have_attribute("data-status", "succeeded")
    expect(card.locator(".approval-state")).to_have_text("approved")
    expect(card.get_by_role("button")).to_have_count(0)
    expect(run.locator("details.tool .tool-state")).to_contain_text("ok")
    expect(run.locator(".final-text")).to_contain_text("Europe/Paris")

    rejected = ask(page, "what time is it")
    card = rejected.locator(".approval")
    card.get_by_role("button", name="Reject").click()
    expect(rejected).to_have_attribute("data-status", "succeeded")
    expect(card.locator(".approval-state")).to_have_text("rejected")
    expect(rejected.locator("details.tool .tool-state")).to_have_text("error · rejected")
    expect(rejected.locator(".final-text")).to_contain_text("rejected")
