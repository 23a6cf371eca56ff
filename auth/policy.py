"""The password policy and email normalisation.

A password is refused when it is shorter than 10 characters, equals the email
(or its local part), is one character repeated, or is on the shipped list of
common passwords (compared case-insensitively).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["MIN_LENGTH", "normalize_email", "password_problem"]

MIN_LENGTH = 10


def normalize_email(email: str) -> str:
    return email.strip().lower()


@cache
def _common() -> frozenset[str]:
    text = resources.files("auth").joinpath("common_passwords.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))


def password_problem(password: str, email: str) -> str | None:
    """Why ``password`` is refused for ``email``, or None when it is acceptable."""
    lowered = password.strip().lower()
    email = normalize_email(email)
    if len(password) < MIN_LENGTH:
        return f"the password must have at least {MIN_LENGTH} characters"
    if lowered in (email, email.split("@", 1)[0]):
        return "the password must not be the email"
    if len(set(lowered)) == 1:
        return "the password must not repeat one character"
    if lowered in _common():
        return "the password is too common"
    return None
