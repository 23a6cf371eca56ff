"""Access tokens: issue (EdDSA JWTs) and verify this service's own tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
from ulid import ULID

from auth.config import AuthSettings
from auth.keys import KeyStore

__all__ = ["AccessClaims", "TokenIssuer"]


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    session_id: str
    expires_at: int
    key_id: str


class TokenIssuer:
    def __init__(self, settings: AuthSettings, keys: KeyStore) -> None:
        self._settings = settings
        self._keys = keys

    def issue(self, user_id: str, session_id: str) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "sub": user_id,
            "sid": session_id,
            "jti": str(ULID()),
            "iat": now,
            "exp": now + self._settings.access_token_ttl_s,
        }
        return self._keys.sign(claims)

    def verify(self, token: str) -> AccessClaims | None:
        """The claims of a valid token of ours, or None."""
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.public_key(str(header.get("kid")))
            if key is None:
                return None
            claims = jwt.decode(
                token, key, algorithms=["EdDSA"],
                audience=self._settings.audience, issuer=self._settings.issuer,
                options={"require": ["exp", "iat", "sub", "sid", "jti"]})
        except jwt.PyJWTError:
            return None
        return AccessClaims(user_id=claims["sub"], session_id=claims["sid"],
                            expires_at=claims["exp"], key_id=str(header["kid"]))
