"""Browser tests: Playwright for Python driving Debian's Chromium against the local stack.

Without Chromium (``/usr/bin/chromium``) or the ``playwright`` package the browser
tests are skipped, and the end of the session says plainly that they did not run
and how to enable them. With ``CI=true`` a missing browser fails them instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from e2e.stack import LocalStack, StackConfig
from tests.conftest import starts_servers
from tests.prerequisites import Prerequisite

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "reports" / "screenshots"
CHROMIUM = Path(os.environ.get("AGENTCHAT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
HOW_TO_ENABLE = ("install Debian's Chromium (`apt-get install chromium`, as root) and the "
                 "dev dependencies (`make install`)")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed"
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM}"
    return None


BROWSER = Prerequisite("browser", tests="browser tests", what="browser", how=HOW_TO_ENABLE,
                       missing=browser_missing)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    BROWSER.setup(item)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    BROWSER.summary(terminalreporter)


@pytest.fixture(scope="module")
@starts_servers
def browser() -> Iterator[Browser]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=15_000)  # a loaded CI machine is slower than 5 s at times
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Console:
    """Errors the page logged (console errors and uncaught exceptions)."""

    errors: list[str] = field(default_factory=list)
    expected: list[re.Pattern[str]] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console error: {message.text}")

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(f"uncaught: {error}")

    def expect(self, pattern: str) -> None:
        """Errors the browser logs by itself in this test's situation (a refused
        connection while a server restarts, an HTTP error the page handles)."""
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]


@dataclass
class Web:
    page: Page
    console: Console
    stack: LocalStack

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def publish(self, shot: Path, doc_name: str) -> None:
        """With WEB_DOCS_SCREENSHOTS=1, also copy a screenshot into docs/img/."""
        if os.environ.get("WEB_DOCS_SCREENSHOTS") == "1":
            shutil.copyfile(shot, ROOT / "docs" / "img" / doc_name)


@contextmanager
def browsing(browser: Browser, stack: LocalStack, node: pytest.Item) -> Iterator[Web]:
    """A fresh browser context on ``stack``'s backend; the test fails if the page
    logged an error it did not expect."""
    context = browser.new_context(base_url=stack.backend_url(),
                                  viewport={"width": 1280, "height": 860})
    context.set_default_timeout(15_000)
    page = context.new_page()
    console = Console()
    page.on("console", console.on_console)
    page.on("pageerror", console.on_page_error)
    try:
        yield Web(page, console, stack)
        assert console.unexpected() == [], "the page logged errors"
    finally:
        if node.stash.get(FAILED, False):
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"failed-{node.name}.png"))
        context.close()


@pytest.fixture
def web(browser: Browser, stack: LocalStack, request: pytest.FixtureRequest) -> Iterator[Web]:
    """The page on the session's shared stack."""
    with browsing(browser, stack, request.node) as opened:
        yield opened


@pytest.fixture(scope="module")
@starts_servers
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack of the browser tests' own, for a test that loses Redis's data and for
    tool approvals (its ``clock`` tool needs the user's approval)."""
    config = StackConfig.for_tests(tmp_path_factory.mktemp("web"),
                                   env={"WORKER_APPROVAL_TOOLS": '["clock"]'})
    with LocalStack(config) as running:
        yield running


@pytest.fixture
def web_on_own_stack(browser: Browser, own_stack: LocalStack,
                     request: pytest.FixtureRequest) -> Iterator[Web]:
    with browsing(browser, own_stack, request.node) as opened:
        yield opened


#: the access-token lifetime of :func:`short_token_stack` (the page renews at 80 %)
SHORT_TOKEN_TTL_S = 8


@pytest.fixture(scope="module")
@starts_servers
def short_token_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack whose access tokens live seconds: renewal and expiry in real time."""
    config = StackConfig.for_tests(tmp_path_factory.mktemp("short-tokens"),
                                   env={"AUTH_ACCESS_TOKEN_TTL_S": str(SHORT_TOKEN_TTL_S)})
    with LocalStack(config) as running:
        yield running


@pytest.fixture
def web_with_short_tokens(browser: Browser, short_token_stack: LocalStack,
                          request: pytest.FixtureRequest) -> Iterator[Web]:
    with browsing(browser, short_token_stack, request.node) as opened:
        yield opened


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report
