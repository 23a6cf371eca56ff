"""``python -m e2e``: run the stack (``up``), watch an agent (``demo``), prove it (``run``).

    python -m e2e up                 # the whole stack in the foreground, Ctrl-C stops it
    python -m e2e demo               # a user asks a question; its events print as they arrive
    python -m e2e seed --email E     # usage records for a user (signed up if new)
    python -m e2e run                # a fresh stack, every scenario, a report; exit 1 on failure
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bridge.events import TERMINAL_TYPES
from e2e.client import ApiError, ChatClient
from e2e.scenarios import SCENARIOS, ScenarioResult, Target
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
            seeded = asyncio.run(_seed(auth, backend, DEMO_EMAIL, DEMO_PASSWORD, 30))
            print(f"""
The stack is up (data in {root}, logs in {stack.logs}).

  backend   {backend}      (REST /api, WebSocket {stack.ws_url()}, {backend}/docs)
  auth      {auth}      ({auth}/docs)
  postgres  {stack.database_url}
  redis     {stack.redis_url}
  readiness {backend}/readyz   {auth}/readyz
  web page  {backend}/

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
        if (await client.usage(**{"from": "2000-01-01T00:00:00Z"}))["items"]:
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


async def _run_scenarios(target: Target, names: list[str]) -> list[ScenarioResult]:
    results = []
    for name in names:
        _say(f"scenario {name} …")
        result = await SCENARIOS[name](target)
        verdict = "passed" if result.passed else "FAILED"
        _say(f"scenario {name} {verdict}: " + ", ".join(
            f"{k}={v:.1f}" for k, v in result.metrics.items()))
        for failure in result.failures:
            _say(f"  - {failure}")
        results.append(result)
    return results


def cmd_run(args: argparse.Namespace) -> int:
    if args.stack != "local":
        print("error: only --stack local is available so far", file=sys.stderr)
        return 2
    names = args.scenario or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"error: unknown scenario(s) {unknown}; have {list(SCENARIOS)}", file=sys.stderr)
        return 2
    install_signal_exit()
    with tempfile.TemporaryDirectory(prefix="agentchat-e2e-") as tmp:
        try:
            with LocalStack(StackConfig.for_tests(Path(tmp)), progress=_say) as stack:
                target = Target(stack.auth_url, stack.backend_url(), stack.ws_url())
                results = asyncio.run(_run_scenarios(target, names))
                timings = dict(stack.timings)
        except StackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    report_dir = Path(args.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    report = {"stack": args.stack, "service_start_s": timings,
              "scenarios": [asdict(r) | {"passed": r.passed} for r in results]}
    (report_dir / "report.json").write_text(json.dumps(report, indent=2))
    passed = sum(r.passed for r in results)
    print(f"{passed} passed, {len(results) - passed} failed   (report: {report_dir}/report.json)")
    return 0 if passed == len(results) else 1


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
    run = sub.add_parser("run", help="start a fresh stack and run the scenarios")
    run.add_argument("--stack", choices=["local", "compose"], default="local")
    run.add_argument("--scenario", action="append", help="run only these (repeatable)")
    run.add_argument("--report-dir", default="reports/latest")
    run.set_defaults(func=cmd_run)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
