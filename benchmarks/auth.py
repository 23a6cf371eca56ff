"""Auth benchmark: login latency and offline token verification throughput.

    .venv/bin/python -m benchmarks.auth [--logins 40] [--flooders 32] [--verifications 20000]

Starts a fresh local stack, then measures in this one run:

- login p50/p95 over HTTP, beside the baseline of one bare Argon2id verification
  with the same parameters (the cost a login is built around);
- login p50/p95 over HTTP again while a registration flood runs (``--flooders``
  clients posting registrations back to back, each from its own address, so the
  per-address throttle lets them through and only the Argon2id lanes hold them);
- the backend's ``TokenVerifier.verify`` per second on one core (cached keys,
  revocation cache warm), beside the baseline of a bare EdDSA ``jwt.decode``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import jwt
from argon2 import PasswordHasher

from auth.config import AuthSettings
from backend.tokens import TokenVerifier
from e2e.client import ChatClient
from e2e.measure import percentile
from e2e.scenarios import PASSWORD, unique_email
from e2e.stack import LocalStack, StackConfig
from servicekit.redisclient import make_redis


def argon2_baseline(samples: int) -> list[float]:
    settings = AuthSettings()
    hasher = PasswordHasher(time_cost=settings.argon2_time_cost,
                            memory_cost=settings.argon2_memory_kib,
                            parallelism=settings.argon2_parallelism)
    stored = hasher.hash(PASSWORD)
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        hasher.verify(stored, PASSWORD)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def login_latency(stack: LocalStack, samples: int) -> tuple[list[float], str]:
    email = unique_email("bench")
    async with ChatClient(stack.auth_url, stack.backend_url()) as client:
        await client.register(email, PASSWORD)
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            await client.login(email, PASSWORD)
            times.append((time.perf_counter() - started) * 1000)
        assert client.access_token is not None
        return times, client.access_token


async def login_latency_under_flood(stack: LocalStack, samples: int,
                                    flooders: int) -> tuple[list[float], Counter[int], float]:
    """Login times while ``flooders`` clients register back to back; the flood's
    answers by status, and how long it ran."""
    email = unique_email("steady")
    done = asyncio.Event()
    answers: Counter[int] = Counter()
    async with ChatClient(stack.auth_url, stack.backend_url()) as client, \
            httpx.AsyncClient(timeout=30) as http:
        await client.register(email, PASSWORD)

        async def flooder(number: int) -> None:
            while not done.is_set():
                response = await http.post(
                    f"{stack.auth_url}/auth/register",
                    json={"email": unique_email("flood"), "password": PASSWORD},
                    headers={"X-Forwarded-For": f"10.{number // 250}.{number % 250}.1"})
                answers[response.status_code] += 1

        started = time.perf_counter()
        flood = [asyncio.create_task(flooder(n)) for n in range(flooders)]
        await asyncio.sleep(1.0)  # the flood is on before the first login
        times = []
        for _ in range(samples):
            began = time.perf_counter()
            await client.login(email, PASSWORD)
            times.append((time.perf_counter() - began) * 1000)
        done.set()
        await asyncio.gather(*flood)
        return times, answers, time.perf_counter() - started


async def verification_rate(stack: LocalStack, token: str, count: int) -> tuple[float, float]:
    redis = make_redis(stack.redis_url)
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(http=http, redis=redis,
                                 jwks_url=f"{stack.auth_url}/.well-known/jwks.json",
                                 issuer="agentchat-auth", audience="agentchat")
        await verifier.refresh_keys()
        await verifier.verify(token)
        started = time.perf_counter()
        for _ in range(count):
            await verifier.verify(token)
        full = count / (time.perf_counter() - started)
        jwks = (await http.get(f"{stack.auth_url}/.well-known/jwks.json")).json()
    await redis.aclose()
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid)).key
    started = time.perf_counter()
    for _ in range(count):
        jwt.decode(token, key, algorithms=["EdDSA"], audience="agentchat",
                   issuer="agentchat-auth")
    bare = count / (time.perf_counter() - started)
    return full, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logins", type=int, default=40)
    parser.add_argument("--flooders", type=int, default=32)
    parser.add_argument("--verifications", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            LocalStack(StackConfig.for_tests(Path(tmp)), progress=print) as stack:
        baseline = argon2_baseline(args.logins)
        logins, token = asyncio.run(login_latency(stack, args.logins))
        flooded, answers, flood_s = asyncio.run(
            login_latency_under_flood(stack, args.logins, args.flooders))
        full, bare = asyncio.run(verification_rate(stack, token, args.verifications))
    print()
    print(f"{'measure':<46}{'p50':>10}{'p95':>10}")
    print(f"{'login over HTTP (ms)':<46}{statistics.median(logins):>10.1f}"
          f"{percentile(logins, 0.95):>10.1f}")
    print(f"{'login over HTTP, registration flood (ms)':<46}{statistics.median(flooded):>10.1f}"
          f"{percentile(flooded, 0.95):>10.1f}")
    print(f"{'baseline: one Argon2id verify (ms)':<46}{statistics.median(baseline):>10.1f}"
          f"{percentile(baseline, 0.95):>10.1f}")
    print(f"flood: {args.flooders} clients, {sum(answers.values())} registrations in "
          f"{flood_s:.1f} s: " + ", ".join(f"{n} x {status}"
                                          for status, n in sorted(answers.items())))
    print()
    print(f"{'token verifications per second, one core':<46}{full:>10,.0f}")
    print(f"{'baseline: bare EdDSA jwt.decode per second':<46}{bare:>10,.0f}")
    print(f"{'verifier cost over the bare signature check':<46}{bare / full:>9.2f}x")


if __name__ == "__main__":
    main()
