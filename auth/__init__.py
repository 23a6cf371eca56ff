"""The auth service: users, Argon2id passwords, sessions, tokens, JWKS, WS tickets."""

from auth.app import create_app
from auth.config import AuthSettings

__all__ = ["AuthSettings", "create_app"]
