"""``python -m e2e``: run the stack (``up``), watch an agent (``demo``), prove it (``run``).

    python -m e2e up                 # the whole stack in the foreground, Ctrl-C stops it
    python -m e2e demo               # a user asks a question; its events print as they arrive
    python -m e2e seed --email E     # usage records for a user (signed up if new)
    python -m e2e run                # a fresh stack, every scenario, a report; exit 1 on failure
    python -m e2e run --scale smoke --scenario load --stack compose
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bridge.events import TERMINAL_TYPES
from e2e import thresholds
from e2e.client import ApiError, ChatClient
from e2e.compose import ComposeDriver
from e2e.drivers import LocalDriver, Shape, StackDriver
from e2e.scenarios import SCENARIOS
from e2e.scenarios.suite import run_suite
from e2e.stack import LocalStack, StackConfig, StackError, StackPorts, install_signal_exit
from e2e.usage import generate

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo password 123"


def _say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    root = Path(args.data).resolve()
    ports = StackPorts.ephemeral() if args.ephemeral_ports else StackPorts.contract()
    install_signal_exit()
    stack = LocalStack(StackConfig(root=root, ports=ports), progress=_say)
    try:
        with stack:
            backend, auth = stack.backend_url(), stack.auth_url
            internal = stack.backend_internal_url(), stack.auth_internal_url
            seeded = asyncio.run(_seed(auth, backend, DEMO_EMAIL, DEMO_PASSWORD, 30))
            print(f"""
The stack is up (data in {root}, logs in {stack.logs}).

  backend   {backend}      (REST /api, WebSocket {stack.ws_url()}, {backend}/docs)
  auth      {auth}      ({auth}/docs)
  postgres  {stack.database_url}
  redis     {stack.redis_url}
  readiness {backend}/readyz   {auth}/readyz
  web page  {backend}/

Internal listeners (this machine only):
  backend   {internal[0]}      (/internal API of the workers, /metrics, /readyz details)
  auth      {internal[1]}      (/metrics, /readyz details)

Log in as the demo user ({DEMO_EMAIL} / {DEMO_PASSWORD}): {seeded}.

Watch an agent work, in another terminal:
  .venv/bin/python -m e2e demo --backend {backend} --auth {auth}

Ctrl-C stops everything.""", flush=True)
            while True:
                time.sleep(1.0)
                for name in stack.exited():
                    code = stack.services[name].process.popen.poll()  # type: ignore[union-attr]
                    _say(f"{name} exited with code {code}; see {stack.logs / (name + '.log')}")
                    stack.services[name].process.popen = None
    except (KeyboardInterrupt, SystemExit):
        _say("stopped")
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


async def _demo(args: argparse.Namespace) -> int:
    async with ChatClient(args.auth, args.backend) as client:
        try:
            await client.signup(DEMO_EMAIL, DEMO_PASSWORD)
        except Exception as exc:
            print(f"error: cannot reach the stack at {args.auth} / {args.backend}: {exc}\n"
                  "Is `make up` running?", file=sys.stderr)
            return 1
        print(f"logged in as {DEMO_EMAIL}")
        ws_url = args.backend.replace("http", "ws", 1).rstrip("/") + "/ws"
        socket = await client.connect(ws_url)
        print(f"connected: {json.dumps(socket.welcome)}")
        thread = await client.create_thread("demo")
        answer = await socket.request({"type": "start_run", "thread_id": thread["id"],
                                       "input": args.question})
        if answer.get("type") != "run_accepted":
            print(f"error: {answer}", file=sys.stderr)
            return 1
        print(f"run {answer['run_id']} accepted; its events:")
        seen = 0
        while True:
            frame = await socket.wait_for(lambda f: "seq" in f, start=seen, timeout=60)
            seen = next(i for i, r in enumerate(socket.frames) if r.frame is frame) + 1
            print(f"  seq {frame['seq']:>4}  {frame['agent']:<12} {frame['type']:<16} "
                  f"{json.dumps(frame['payload'])}")
            if frame["run_id"] == answer["run_id"] and frame["type"] in TERMINAL_TYPES:
                break
        await socket.close()
        run = await client.wait_run(answer["run_id"])
        print(f"run status over REST: {run['status']}; answer: {run.get('result')}")
    return 0


async def _seed(auth: str, backend: str, email: str, password: str, days: int) -> str:
    """Sign the user up (or in) and give them ``days`` days of usage records, once."""
    async with ChatClient(auth, backend) as client:
        await client.signup(email, password)
        if await client.usage_requests():
            return "usage records already there"
        count = await client.post_usage(generate(email, days))
        return f"{count:,} usage records over {days} days"


def cmd_seed(args: argparse.Namespace) -> int:
    try:
        print(asyncio.run(_seed(args.auth, args.backend, args.email, args.password,
                                args.days)))
    except (ApiError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_demo(args))
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _progress(message: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _driver_factory(kind: str, *, offline: bool = False,
                    redis_cluster: bool = False) -> Callable[[Shape], StackDriver]:
    def make(shape: Shape) -> StackDriver:
        if kind == "compose":
            return ComposeDriver(shape, progress=_progress, offline=offline)
        return LocalDriver(shape, progress=_progress, redis_cluster=redis_cluster)
    return make


def cmd_run(args: argparse.Namespace) -> int:
    names = args.scenario or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"error: unknown scenario(s) {unknown}; have {list(SCENARIOS)}", file=sys.stderr)
        return 2
    try:
        settings = thresholds.load(args.scale, Path(args.thresholds) if args.thresholds
                                   else None, stack=args.stack)
    except thresholds.ThresholdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.redis_cluster and args.stack != "local":
        print("error: --redis-cluster runs on the local stack only", file=sys.stderr)
        return 2
    install_signal_exit()
    report_dir = Path(args.report_dir)
    started = time.monotonic()
    report = asyncio.run(run_suite(
        _driver_factory(args.stack, offline=args.offline, redis_cluster=args.redis_cluster),
        [SCENARIOS[n] for n in names],
        settings, report_dir, stack=args.stack, progress=_progress))
    passed = sum(r.passed for r in report.results)
    print(f"{'PASSED' if report.passed else 'FAILED'}: {passed} of {len(report.results)} "
          f"passed in {time.monotonic() - started:.0f} s; report: {report_dir}/report.html "
          f"(and report.md, report.json)", flush=True)
    return 0 if report.passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the whole local stack in the foreground")
    up.add_argument("--data", default=".local-stack", help="data folder (kept between runs)")
    up.add_argument("--ephemeral-ports", action="store_true",
                    help="free ports instead of the contract's 8000/8001/5432/6379")
    up.set_defaults(func=cmd_up)
    demo = sub.add_parser("demo", help="ask a question and print the run's events live")
    demo.add_argument("--backend", default="http://127.0.0.1:8000")
    demo.add_argument("--auth", default="http://127.0.0.1:8001")
    demo.add_argument("--question", default="what is 17 * 23")
    demo.set_defaults(func=cmd_demo)
    seed = sub.add_parser("seed", help="usage records for a user, signed up if new")
    seed.add_argument("--backend", default="http://127.0.0.1:8000")
    seed.add_argument("--auth", default="http://127.0.0.1:8001")
    seed.add_argument("--email", default=DEMO_EMAIL)
    seed.add_argument("--password", default=DEMO_PASSWORD)
    seed.add_argument("--days", type=int, default=30)
    seed.set_defaults(func=cmd_seed)
    run = sub.add_parser("run", help="start a fresh stack, run the scenarios, write a report",
                         description="Start a fresh stack, run the scenarios, judge them "
                         "against e2e/thresholds.toml and write report.json, report.md and "
                         "report.html. Exits 1 when any scenario or threshold fails.")
    run.add_argument("--stack", choices=["local", "compose"], default="local",
                     help="local processes (default) or docker compose (needs a Docker engine)")
    run.add_argument("--offline", action="store_true",
                     help="compose with the images of deploy/offline/build.sh (no registry)")
    run.add_argument("--redis-cluster", action="store_true",
                     help="a Redis Cluster of three masters with a replica each (Redis 7+: "
                     "Debian's redis-server) in place of the one Redis; the failure "
                     "scenario then fails a master over instead of restarting Redis")
    run.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                     help="run only these (repeatable); default: all, in order")
    run.add_argument("--scale", choices=["smoke", "full"], default="full",
                     help="workload size: full (default) or smoke (a quick pass)")
    run.add_argument("--report-dir", default="reports/latest")
    run.add_argument("--thresholds", help="settings file (default: e2e/thresholds.toml)")
    run.set_defaults(func=cmd_run)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
