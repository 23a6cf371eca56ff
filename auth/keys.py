"""Signing keys: Ed25519 keys on disk, a keyring with rotation, the published JWKS.

The key directory holds ``<kid>.pem`` files and ``keyring.json``::

    {"current": kid, "next": kid, "retired": [{"kid": kid, "retired_at": epoch_s}]}

``current`` signs. ``next`` is published before it signs, so verifiers already
hold it when a rotation promotes it. A rotated-out key stays published as
``retired`` until every token it signed has expired, then it is deleted.

    python -m auth.keys rotate      # next → current, current → retired, new next
    python -m auth.keys revoke KID  # withdraw a key now (compromised), and announce it

Revoking deletes the key from the ring and its file, so it leaves the published
JWKS, and announces it on Redis (:mod:`servicekit.revocation`): every backend
drops it within a second and closes the sockets it authenticated. The current
signing key is refused unless ``--rotate`` is given: then a rotation first makes
``next`` current, and the old current key is revoked. A revoked ``next`` is
replaced by a new one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from redis.exceptions import RedisError
from ulid import ULID

__all__ = ["KeyInUse", "KeyStore", "SigningKey", "UnknownKey", "revoke", "rotate"]

KEYRING = "keyring.json"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(self.private_key.public_key()))
        return {**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}


def _new_key(directory: Path) -> str:
    kid = f"key_{ULID()}"
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    fd = os.open(directory / f"{kid}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return kid


def _load(directory: Path, kid: str) -> SigningKey:
    private = serialization.load_pem_private_key((directory / f"{kid}.pem").read_bytes(), None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"{kid}.pem is not an Ed25519 private key")
    return SigningKey(kid=kid, private_key=private)


def _write_keyring(directory: Path, keyring: dict[str, Any]) -> None:
    temporary = directory / f"{KEYRING}.tmp"
    temporary.write_text(json.dumps(keyring, indent=2))
    temporary.replace(directory / KEYRING)  # atomic: readers see the old or the new ring


def _read_keyring(directory: Path) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / KEYRING
    if not path.exists():
        _write_keyring(directory, {"current": _new_key(directory), "next": _new_key(directory),
                                   "retired": []})
    keyring: dict[str, Any] = json.loads(path.read_text())
    return keyring


def rotate(directory: Path, *, keep_retired_s: float) -> dict[str, Any]:
    """Promote ``next``, retire ``current``, create a new ``next``, drop expired keys."""
    keyring = _read_keyring(directory)
    now = time.time()
    retired = [*keyring["retired"], {"kid": keyring["current"], "retired_at": now}]
    kept = [r for r in retired if now - r["retired_at"] < keep_retired_s]
    for gone in (r for r in retired if r not in kept):
        (directory / f"{gone['kid']}.pem").unlink(missing_ok=True)
    keyring = {"current": keyring["next"], "next": _new_key(directory), "retired": kept}
    _write_keyring(directory, keyring)
    return keyring


class UnknownKey(LookupError):
    """No key of that id in the ring."""


class KeyInUse(ValueError):
    """The key signs tokens now; a rotation must make another one current first."""


def revoke(directory: Path, kid: str, *, rotate_first: bool = False,
           keep_retired_s: float) -> dict[str, Any]:
    """Delete ``kid`` from the ring and from disk; returns the new ring.

    The current key is refused (:class:`KeyInUse`) unless ``rotate_first``: then
    ``next`` becomes current and the old current key is revoked as a retired one.
    """
    keyring = _read_keyring(directory)
    if kid == keyring["current"]:
        if not rotate_first:
            raise KeyInUse(f"{kid} is the current signing key")
        keyring = rotate(directory, keep_retired_s=keep_retired_s)
    if kid == keyring["next"]:
        keyring = {**keyring, "next": _new_key(directory)}
    elif any(r["kid"] == kid for r in keyring["retired"]):
        keyring = {**keyring, "retired": [r for r in keyring["retired"] if r["kid"] != kid]}
    else:
        raise UnknownKey(f"no key {kid} in the keyring")
    _write_keyring(directory, keyring)
    (directory / f"{kid}.pem").unlink(missing_ok=True)
    return keyring


async def _announce_key(redis_url: str, cluster: bool, kid: str) -> int:
    from servicekit.redisclient import make_redis
    from servicekit.revocation import KeyRevoked, announce

    redis = make_redis(redis_url, cluster=cluster)
    try:
        return await announce(redis, KeyRevoked(kid))
    finally:
        await redis.aclose()


def _revoke_command(args: argparse.Namespace, keep_retired_s: float, redis_url: str,
                    cluster: bool) -> int:
    try:
        keyring = revoke(args.keys_dir, args.kid, rotate_first=args.rotate,
                         keep_retired_s=keep_retired_s)
    except KeyInUse as exc:
        print(f"refused: {exc}; run `python -m auth.keys rotate` first, or revoke with "
              f"--rotate (next becomes current, then {args.kid} is revoked)", file=sys.stderr)
        return 1
    except UnknownKey as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(f"revoked {args.kid}: deleted from the keyring and from disk; the auth service "
          f"stops publishing it within 1 s")
    print(f"current signing key: {keyring['current']}")
    try:
        receivers = asyncio.run(_announce_key(redis_url, cluster, args.kid))
    except (RedisError, OSError) as exc:
        print(f"NOT ANNOUNCED ({exc}): backends drop the key at their next JWKS refresh "
              f"(within 300 s); run this again once Redis answers to announce it",
              file=sys.stderr)
        return 3
    print(f"announced on Redis to {receivers} backend replica(s): they refuse its tokens "
          f"and close its sockets now")
    return 0


class KeyStore:
    """The keyring as the running service sees it; reloads when the ring changes."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._mtime = -1.0
        self._checked = 0.0
        self._current: SigningKey
        self._published: list[SigningKey] = []
        self.reload()

    def reload(self) -> None:
        keyring = _read_keyring(self._directory)
        self._mtime = (self._directory / KEYRING).stat().st_mtime
        self._current = _load(self._directory, keyring["current"])
        kids = [keyring["current"], keyring["next"], *(r["kid"] for r in keyring["retired"])]
        self._published = [_load(self._directory, kid) for kid in kids]

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        if (self._directory / KEYRING).stat().st_mtime != self._mtime:
            self.reload()

    @property
    def current(self) -> SigningKey:
        self._refresh()
        return self._current

    def jwks(self) -> dict[str, Any]:
        self._refresh()
        return {"keys": [key.public_jwk() for key in self._published]}

    def public_key(self, kid: str) -> Any:
        self._refresh()
        for key in self._published:
            if key.kid == kid:
                return key.private_key.public_key()
        return None

    def sign(self, claims: dict[str, Any]) -> str:
        key = self.current
        return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})


def main(argv: list[str] | None = None) -> int:
    from auth.config import AuthSettings

    settings = AuthSettings()
    parser = argparse.ArgumentParser(prog="python -m auth.keys",
                                     description="Manage the auth service's signing keys.")
    parser.add_argument("command", choices=["rotate", "show", "revoke"])
    parser.add_argument("kid", nargs="?", help="revoke: the key to withdraw")
    parser.add_argument("--rotate", action="store_true",
                        help="revoke: allow the current key, rotating first")
    parser.add_argument("--keys-dir", type=Path, default=Path(settings.keys_dir))
    args = parser.parse_intermixed_args(argv)  # `revoke --rotate KID` too
    keep_retired_s = settings.access_token_ttl_s + 60
    if args.command == "revoke":
        if not args.kid:
            parser.error("revoke needs the KID of the key to withdraw")
        return _revoke_command(args, keep_retired_s, settings.redis_url,
                               settings.redis_cluster)
    if args.command == "rotate":
        # a retired key stays published while tokens it signed may live
        keyring = rotate(args.keys_dir, keep_retired_s=keep_retired_s)
    else:
        keyring = _read_keyring(args.keys_dir)
    print(json.dumps(keyring, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
