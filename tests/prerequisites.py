"""Tests that need something a machine may lack (a browser, a model): skipped with a
banner at the end of the session saying what is missing and how to install it;
with ``CI=true`` they fail instead (there the install provides it, so a skip
would hide a broken install)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

__all__ = ["Prerequisite", "in_ci"]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1", "yes"}


class Prerequisite:
    """What the tests using ``fixture`` need; ``missing()`` says why it is not here
    (None: it is)."""

    def __init__(self, fixture: str, *, tests: str, what: str, how: str,
                 missing: Callable[[], str | None]) -> None:
        self._fixture = fixture
        self._what = what
        self._tests = tests
        self._how = how
        self._missing = missing
        self._not_run: dict[str, int] = {}  # why they did not run -> how many

    def setup(self, item: pytest.Item) -> None:
        """From a ``pytest_runtest_setup`` hook run first (before any fixture, so no
        server starts for nothing): skip, or in CI fail, a test that needs it."""
        if self._fixture not in getattr(item, "fixturenames", ()):
            return
        why = self._missing()
        if why is None:
            return
        message = f"{self._tests} did not run: {why}; to enable them, {self._how}"
        self._not_run[message] = self._not_run.get(message, 0) + 1
        if in_ci():
            pytest.fail(f"{message} (CI=true: a missing {self._what} is a failure)",
                        pytrace=False)
        pytest.skip(message)

    def summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        for message, count in self._not_run.items():
            terminalreporter.write_sep("!", f"{count} {self._tests.upper()} DID NOT RUN",
                                       red=True, bold=True)
            terminalreporter.write_line(message)
