"""Revocation as the auth service announces it and the backends follow it.

Two things, written by auth and read by every backend replica:

- the mark ``revoked:sid:<session>`` in Redis (for the access-token lifetime):
  checked when a token or ticket is verified;
- an announcement on the pub/sub channel :data:`REVOCATION_CHANNEL`, so that a
  replica closes the open sockets of a revoked session, or authenticated with a
  revoked signing key, at once. JSON, one object a message::

      {"kind": "sessions", "sids": ["ses_…", …]}
      {"kind": "key", "kid": "key_…"}

Both services import the names from here, so neither spells them on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from redis.asyncio import Redis

from servicekit.rediskeys import REVOCATION_CHANNEL

__all__ = [
    "Announcement",
    "KeyRevoked",
    "SessionsRevoked",
    "announce",
    "encode_announcement",
    "parse_announcement",
]


@dataclass(frozen=True, slots=True)
class SessionsRevoked:
    """These sessions ended (logout, logout-all, deletion, refresh-token reuse)."""

    sids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KeyRevoked:
    """This signing key was withdrawn: nothing it signed is valid any more."""

    kid: str


Announcement = SessionsRevoked | KeyRevoked


def encode_announcement(announcement: Announcement) -> str:
    if isinstance(announcement, SessionsRevoked):
        return json.dumps({"kind": "sessions", "sids": list(announcement.sids)})
    return json.dumps({"kind": "key", "kid": announcement.kid})


def parse_announcement(raw: str | bytes) -> Announcement:
    """The announcement in one message of the channel; ``ValueError`` if malformed."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("an announcement is JSON") from None
    if not isinstance(data, dict):
        raise ValueError("an announcement is a JSON object")
    kind = data.get("kind")
    if kind == "sessions":
        sids = data.get("sids")
        if not isinstance(sids, list) or not all(isinstance(s, str) and s for s in sids):
            raise ValueError("sessions: sids must be a list of session ids")
        return SessionsRevoked(tuple(sids))
    if kind == "key":
        kid = data.get("kid")
        if not isinstance(kid, str) or not kid:
            raise ValueError("key: kid must be a key id")
        return KeyRevoked(kid)
    raise ValueError(f"unknown announcement kind {kind!r}")


async def announce(redis: Redis, announcement: Announcement) -> int:
    """Publish ``announcement``; returns how many subscribers (replicas) received it."""
    receivers: int = await redis.publish(REVOCATION_CHANNEL, encode_announcement(announcement))
    return receivers
