"""The revocation announcement: one format, parsed by one function."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from servicekit.rediskeys import REVOCATION_CHANNEL, revoked_session_key
from servicekit.revocation import (
    KeyRevoked,
    SessionsRevoked,
    announce,
    encode_announcement,
    parse_announcement,
)


@pytest.mark.parametrize("announcement", [
    SessionsRevoked(("ses_1",)), SessionsRevoked(("ses_1", "ses_2")), SessionsRevoked(()),
    KeyRevoked("key_1"),
])
def test_an_announcement_survives_its_encoding(
        announcement: SessionsRevoked | KeyRevoked) -> None:
    assert parse_announcement(encode_announcement(announcement)) == announcement
    assert parse_announcement(encode_announcement(announcement).encode()) == announcement


def test_the_documented_form() -> None:
    assert parse_announcement('{"kind":"sessions","sids":["ses_a","ses_b"]}') == \
        SessionsRevoked(("ses_a", "ses_b"))
    assert parse_announcement('{"kind":"key","kid":"key_a"}') == KeyRevoked("key_a")
    assert revoked_session_key("ses_a") == "revoked:sid:ses_a"


@pytest.mark.parametrize("raw", [
    "not json", "[]", '{"kind": "everything"}', '{"kind": "sessions"}',
    '{"kind": "sessions", "sids": "ses_1"}', '{"kind": "sessions", "sids": [1]}',
    '{"kind": "sessions", "sids": [""]}', '{"kind": "key"}', '{"kind": "key", "kid": ""}',
    b"\xff\xfe",
])
def test_malformed_announcements_are_refused(raw: str | bytes) -> None:
    with pytest.raises(ValueError):
        parse_announcement(raw)


async def test_announce_publishes_on_the_channel(redis: Redis) -> None:
    pubsub = redis.pubsub()
    await pubsub.subscribe(REVOCATION_CHANNEL)
    try:
        assert await announce(redis, KeyRevoked("key_x")) == 1
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            if message is not None:
                break
        assert parse_announcement(message["data"]) == KeyRevoked("key_x")
    finally:
        await pubsub.aclose()
