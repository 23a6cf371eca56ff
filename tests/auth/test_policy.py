import pytest

from auth.policy import normalize_email, password_problem


@pytest.mark.parametrize(("password", "problem"), [
    ("short", "at least 10"),
    ("ada@example.com", "must not be the email"),
    ("ADA@example.com", "must not be the email"),
    ("adalovelace", None),
    ("aaaaaaaaaaaa", "repeat one character"),
    ("Password123", "too common"),
    ("qwertyuiop", "too common"),
    ("1234567890", "too common"),
    ("correct horse battery staple", None),
])
def test_password_policy(password: str, problem: str | None) -> None:
    found = password_problem(password, "Ada@Example.com")
    assert (found is None) if problem is None else (problem in (found or ""))


def test_local_part_is_refused_too() -> None:
    assert password_problem("ada.lovelace", "ada.lovelace@example.com") is not None


def test_emails_are_normalised() -> None:
    assert normalize_email("  Ada@Example.COM ") == "ada@example.com"
