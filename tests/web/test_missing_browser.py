"""Without a browser the browser tests do not pass silently: they are skipped with a
reason and a closing line that says how to enable them; with CI=true they fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_browser_tests(ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["AGENTCHAT_CHROMIUM"] = "/nonexistent/chromium"
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/web/test_browser.py", "-k", "register or arithmetic"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_without_chromium_the_tests_are_skipped_and_the_summary_says_so() -> None:
    result = run_browser_tests(ci=False)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 skipped" in result.stdout
    assert "2 BROWSER TESTS DID NOT RUN" in result.stdout
    assert "no Chromium at /nonexistent/chromium" in result.stdout
    assert "apt-get install chromium" in result.stdout


def test_without_chromium_in_ci_the_tests_fail() -> None:
    result = run_browser_tests(ci=True)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "2 errors" in result.stdout
    assert "CI=true: a missing browser is a failure" in result.stdout
