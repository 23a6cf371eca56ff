"""Text that can be stored: a string type for request bodies.

PostgreSQL text cannot hold NUL, and UTF-8 cannot encode lone surrogates (which
JSON allows as ``\\ud800``). Both are refused at the boundary with a 422 that
names the field, instead of failing deep inside a query.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

__all__ = ["StorableStr", "storable"]


def storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


StorableStr = Annotated[str, AfterValidator(storable)]
