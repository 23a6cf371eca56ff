"""The real-model fixtures: the model's file and llama.cpp's server on it.

A test that needs the server (the ``llama`` fixture) is skipped when the model or
xllamacpp is missing, and the end of the session says plainly that it did not
run, what is missing and how to install it. With ``CI=true`` a missing model
fails such a test instead: there ``make install`` installs it, so a skip would
hide a broken install.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import starts_servers
from tests.model import (
    HOW_TO_INSTALL,
    LlamaServer,
    ModelMissing,
    llama_server,
    model_file,
    xllamacpp_problem,
)

_not_run: dict[str, int] = {}  # why the real-model tests did not run -> how many


@functools.cache
def _model() -> Path | str:
    """The model's file, or why it cannot be served here (checked once per session)."""
    problem = xllamacpp_problem()
    if problem is not None:
        return problem
    try:
        return model_file()
    except ModelMissing as exc:
        return str(exc)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1", "yes"}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture (so no server starts for nothing): skip, or in CI fail, a
    test that needs the real model when it is missing."""
    if "llama" not in getattr(item, "fixturenames", ()):
        return
    found = _model()
    if isinstance(found, Path):
        return
    message = f"real-model tests did not run: {found}; to enable them, {HOW_TO_INSTALL}"
    _not_run[message] = _not_run.get(message, 0) + 1
    if _in_ci():
        pytest.fail(f"{message} (CI=true: a missing model is a failure)", pytrace=False)
    pytest.skip(message)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for message, count in _not_run.items():
        terminalreporter.write_sep("!", f"{count} REAL-MODEL TESTS DID NOT RUN", red=True,
                                   bold=True)
        terminalreporter.write_line(message)


@pytest.fixture(scope="session")
@starts_servers
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama.cpp's OpenAI-compatible server on the real model, in a child process."""
    found = _model()
    assert isinstance(found, Path), found  # pytest_runtest_setup saw to it
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    with llama_server(found, log_path=log_path) as server:
        yield server
