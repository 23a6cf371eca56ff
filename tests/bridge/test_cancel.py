"""Stop requests: one parser for the cancel key's value and the channel's message."""

from __future__ import annotations

import pytest

from bridge.cancel import parse_cancel_message, parse_stop


@pytest.mark.parametrize(("value", "by"), [(b"interrupt", "interrupt"), ("interrupt", "interrupt"),
                                           (b"user", "user"), ("", "user"), (b"junk", "user")])
def test_parse_stop(value: bytes | str, by: str) -> None:
    assert parse_stop(value) == by


def test_parse_cancel_message() -> None:
    assert parse_cancel_message(b"run_1 interrupt") == ("run_1", "interrupt")
    assert parse_cancel_message("run_2 user") == ("run_2", "user")
    assert parse_cancel_message(b"run_3") == ("run_3", "user")
