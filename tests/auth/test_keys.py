"""Key rotation: the keyring on disk, and a rotation under the running stack."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

from auth.keys import KEYRING, KeyInUse, KeyStore, UnknownKey, revoke, rotate
from e2e.client import ChatClient
from e2e.scenarios import PASSWORD, Target, unique_email
from e2e.stack import LocalStack


def test_rotation_promotes_next_and_keeps_retired_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    first = json.loads((tmp_path / KEYRING).read_text())
    assert store.current.kid == first["current"]
    assert {k["kid"] for k in store.jwks()["keys"]} == {first["current"], first["next"]}
    second = rotate(tmp_path, keep_retired_s=3600)
    assert second["current"] == first["next"]
    assert [r["kid"] for r in second["retired"]] == [first["current"]]
    store.reload()
    assert {k["kid"] for k in store.jwks()["keys"]} == {
        first["current"], first["next"], second["next"]}
    third = rotate(tmp_path, keep_retired_s=0)  # retired keys past their tokens' life go
    assert third["retired"] == []
    assert not (tmp_path / f"{first['current']}.pem").exists()
    assert all("d" not in key for key in store.jwks()["keys"])


def test_revoking_removes_a_key_from_the_ring_and_the_disk(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    first = rotate(tmp_path, keep_retired_s=3600)
    retired = first["retired"][0]["kid"]
    ring = revoke(tmp_path, retired, keep_retired_s=3600)
    assert ring["retired"] == [] and ring["current"] == first["current"]
    assert not (tmp_path / f"{retired}.pem").exists()
    store.reload()
    assert retired not in {k["kid"] for k in store.jwks()["keys"]}
    assert store.public_key(retired) is None
    again = revoke(tmp_path, ring["next"], keep_retired_s=3600)  # a new next replaces it
    assert again["next"] not in (ring["next"], ring["current"])
    assert (tmp_path / f"{again['next']}.pem").exists()
    with pytest.raises(UnknownKey):
        revoke(tmp_path, retired, keep_retired_s=3600)


def test_the_current_key_is_revoked_only_with_a_rotation(tmp_path: Path) -> None:
    KeyStore(tmp_path)
    ring = json.loads((tmp_path / KEYRING).read_text())
    with pytest.raises(KeyInUse):
        revoke(tmp_path, ring["current"], keep_retired_s=3600)
    assert json.loads((tmp_path / KEYRING).read_text()) == ring  # untouched
    after = revoke(tmp_path, ring["current"], rotate_first=True, keep_retired_s=3600)
    assert after["current"] == ring["next"]
    assert after["retired"] == []
    assert not (tmp_path / f"{ring['current']}.pem").exists()


def test_keys_are_private_files(tmp_path: Path) -> None:
    KeyStore(tmp_path)
    for pem in tmp_path.glob("*.pem"):
        assert pem.stat().st_mode & 0o777 == 0o600


async def _backend_accepts(client: ChatClient) -> bool:
    try:
        await client._call("GET", f"{client.backend_url}/api/threads")
    except Exception:
        return False
    return True


async def test_rotation_under_the_running_stack(stack: LocalStack, target: Target) -> None:
    keys_dir = Path(stack.root) / "keys"
    email = unique_email("rotate")
    async with ChatClient(target.auth_url, target.backend_url) as before, \
            ChatClient(target.auth_url, target.backend_url) as after:
        await before.signup(email, PASSWORD)
        assert before.access_token is not None
        old_kid = jwt.get_unverified_header(before.access_token)["kid"]
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "auth.keys", "rotate", "--keys-dir", str(keys_dir)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "AUTH_KEYS_DIR": str(keys_dir)})
        keyring = json.loads(result.stdout)
        assert keyring["retired"][-1]["kid"] == old_kid
        await asyncio.sleep(1.1)  # the auth service looks at the keyring once a second
        await after.login(email, PASSWORD)
        assert after.access_token is not None
        assert jwt.get_unverified_header(after.access_token)["kid"] == keyring["current"]
        started = time.monotonic()
        assert await _backend_accepts(after)  # the backend already held the new key
        assert await _backend_accepts(before)  # tokens of the retired key live on
        assert time.monotonic() - started < 5
