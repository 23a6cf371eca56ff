"""Signing keys: Ed25519 keys on disk, JWT signing and the published JWKS.

The key directory holds one PEM file per key, named ``<kid>.pem``; the newest
file signs. Keys are created on first start when the directory is empty, and
never live in the repository.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from ulid import ULID

__all__ = ["KeyStore", "SigningKey"]


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(self.private_key.public_key()))
        return {**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}


class KeyStore:
    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("a key store needs at least one key")
        self._keys = keys

    @classmethod
    def load_or_create(cls, directory: Path) -> KeyStore:
        directory.mkdir(parents=True, exist_ok=True)
        files = sorted(directory.glob("*.pem"))
        if not files:
            files = [cls._create(directory)]
        keys = []
        for path in files:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise ValueError(f"{path} is not an Ed25519 private key")
            keys.append(SigningKey(kid=path.stem, private_key=private))
        return cls(keys)

    @staticmethod
    def _create(directory: Path) -> Path:
        kid = f"key_{ULID()}"
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = directory / f"{kid}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return path

    @property
    def current(self) -> SigningKey:
        return self._keys[-1]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk() for key in self._keys]}

    def sign(self, claims: dict[str, Any]) -> str:
        key = self.current
        return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})


def now_s() -> int:
    return int(time.time())
