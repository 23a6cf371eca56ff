"""What ends a socket's authorization: plain rules, no socket."""

from __future__ import annotations

from backend.authorization import (
    SESSION_REVOKED,
    renewal_problem,
    revocation_reason,
    seconds_left,
)
from backend.tokens import Principal
from servicekit.revocation import KeyRevoked, SessionsRevoked

ALICE = Principal(user_id="usr_a", session_id="ses_a1", expires_at=1_000, key_id="key_1")


def test_seconds_left_counts_down_to_zero() -> None:
    assert seconds_left(ALICE, 900.0) == 100.0
    assert seconds_left(ALICE, 1_000.0) == 0.0
    assert seconds_left(ALICE, 5_000.0) == 0.0


def test_a_session_announcement_ends_only_its_sessions() -> None:
    assert revocation_reason(ALICE, SessionsRevoked(("ses_x", "ses_a1"))) == SESSION_REVOKED
    assert revocation_reason(ALICE, SessionsRevoked(("ses_a2",))) is None
    assert revocation_reason(ALICE, SessionsRevoked(())) is None


def test_a_key_announcement_ends_what_the_key_authenticated() -> None:
    assert revocation_reason(ALICE, KeyRevoked("key_1")) == SESSION_REVOKED
    assert revocation_reason(ALICE, KeyRevoked("key_2")) is None


def test_a_renewal_keeps_the_user() -> None:
    later = Principal(user_id="usr_a", session_id="ses_a1", expires_at=2_000, key_id="key_2")
    other_session = Principal(user_id="usr_a", session_id="ses_a2", expires_at=2_000,
                              key_id="key_1")
    bob = Principal(user_id="usr_b", session_id="ses_b1", expires_at=2_000, key_id="key_1")
    assert renewal_problem(ALICE, later) is None
    assert renewal_problem(ALICE, other_session) is None
    assert renewal_problem(ALICE, bob) == "the token belongs to another user"
