"""Secrets taken out of text: URL passwords, bearer tokens, query strings."""

from __future__ import annotations

import pytest

from servicekit.redaction import redact_secrets, redact_url, strip_query


@pytest.mark.parametrize(("url", "redacted"), [
    ("postgresql://app:s3cr3t-pw@db:5432/agentchat", "postgresql://app:***@db:5432/agentchat"),
    ("redis://:s3cr3t-pw@redis:6379/0", "redis://:***@redis:6379/0"),
    ("rediss://default:s3cr3t-pw@redis:6380/0", "rediss://default:***@redis:6380/0"),
    ("http://agentchat:s3cr3t-pw@clickhouse:8123", "http://agentchat:***@clickhouse:8123"),
    ("postgresql+asyncpg://app:pw@db/x", "postgresql+asyncpg://app:***@db/x"),
    # raw @ / # ? in a password: all of it goes, up to the host
    ("postgresql://app:p@ss/w#rd?x@db/agentchat", "postgresql://app:***@db/agentchat"),
])
def test_a_url_password_is_masked(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize("url", [
    "postgresql://postgres@127.0.0.1:5432/agentchat",  # a user, no password
    "redis://127.0.0.1:6379/0",
    "http://127.0.0.1:8000/readyz",
    "chdb:///.local-stack/clickhouse",
    "http://host:8000/path?q=a:b",
])
def test_a_url_without_password_is_left_alone(url: str) -> None:
    assert redact_url(url) == url


def test_every_url_in_a_text_is_redacted_and_the_text_kept() -> None:
    text = ("connect to 'postgresql://app:first-secret@db/x' failed; "
            "then redis://:second-secret@redis:6379/0 (a@b.example wrote)")
    assert redact_secrets(text) == ("connect to 'postgresql://app:***@db/x' failed; "
                                    "then redis://:***@redis:6379/0 (a@b.example wrote)")


@pytest.mark.parametrize(("text", "redacted"), [
    ("Authorization: Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.c2ln",
     "Authorization: Bearer ***"),
    ("(b'authorization', b'bearer abcdefgh12345678==')", "(b'authorization', b'bearer ***')"),
    ("a bearer token was refused", "a bearer token was refused"),  # prose stays
])
def test_a_bearer_token_is_masked(text: str, redacted: str) -> None:
    assert redact_secrets(text) == redacted


def test_a_query_string_is_stripped() -> None:
    assert strip_query("/internal/users/u/messages?q=secret%20text") == "/internal/users/u/messages"
    assert strip_query("/healthz") == "/healthz"
