"""The real-model fixtures: the model's file and llama.cpp's server on it.

A test that needs the server (the ``llama`` fixture) is skipped when the model or
xllamacpp is missing, and the end of the session says plainly that it did not
run, what is missing and how to install it. With ``CI=true`` a missing model
fails such a test instead: there ``make install`` installs it, so a skip would
hide a broken install.
"""

from __future__ import annotations

import functools
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
from tests.prerequisites import Prerequisite


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


MODEL = Prerequisite("llama", tests="real-model tests", what="model", how=HOW_TO_INSTALL,
                     missing=lambda: None if isinstance(_model(), Path) else str(_model()))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    MODEL.setup(item)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    MODEL.summary(terminalreporter)


@pytest.fixture(scope="session")
@starts_servers
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama.cpp's OpenAI-compatible server on the real model, in a child process."""
    found = _model()
    assert isinstance(found, Path), found  # pytest_runtest_setup saw to it
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    with llama_server(found, log_path=log_path) as server:
        yield server
