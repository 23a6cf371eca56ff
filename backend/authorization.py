"""What ends an open socket's authorization: expiry, revocation, a refused renewal.

Plain functions over a :class:`~backend.tokens.Principal`, no I/O: the gateway
(:mod:`backend.ws`) asks them and acts on the answer.
"""

from __future__ import annotations

from backend.tokens import Principal
from servicekit.revocation import Announcement, KeyRevoked, SessionsRevoked

__all__ = [
    "SESSION_REVOKED",
    "TOKEN_EXPIRED",
    "renewal_problem",
    "revocation_reason",
    "seconds_left",
]

#: Close reasons (code 4401) of a socket whose authorization ended.
TOKEN_EXPIRED = "token_expired"
SESSION_REVOKED = "session_revoked"


def seconds_left(principal: Principal, now: float) -> float:
    """Seconds until the socket's authorization expires (0 when it has)."""
    return max(0.0, principal.expires_at - now)


def revocation_reason(principal: Principal, announcement: Announcement) -> str | None:
    """The close reason when ``announcement`` ends this socket's authorization."""
    if isinstance(announcement, SessionsRevoked):
        return SESSION_REVOKED if principal.session_id in announcement.sids else None
    if isinstance(announcement, KeyRevoked):
        return SESSION_REVOKED if principal.key_id == announcement.kid else None
    return None


def renewal_problem(current: Principal, new: Principal) -> str | None:
    """Why ``new`` cannot take over this socket from ``current``, or None.

    A renewal keeps the socket's user: a token of another user is refused (the
    socket carries the first user's events). Another session of the same user
    is accepted; the socket then belongs to that session.
    """
    if new.user_id != current.user_id:
        return "the token belongs to another user"
    return None
