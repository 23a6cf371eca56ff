"""What an attacker can do to the compose stack as it ships: from this host, and
from a container on the stack's internal network holding no credential (or one
service's credentials, as after a compromise of that service).

One project is started for the module from docker-compose.yml with the offline
images (compose.offline.yml swaps images only), in production mode with fresh
secrets, and removed at the end. Needs a Docker engine and the images of
``make compose-images``; without an engine the module is skipped with that reason,
except under CI=true where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2e.compose import (
    OFFLINE_FILE,
    REPO,
    ComposeCommands,
    ComposeDriver,
    compose_cli,
    stack_secrets,
)
from e2e.drivers import Shape
from tests.conftest import starts_servers

DATA_STORES = ("postgres", "redis", "clickhouse")
APP_IMAGE = "agentchat:local"

pytestmark = pytest.mark.timeout(900)


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60,
                          check=False).returncode == 0


def _image_exists(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True,
                          timeout=60, check=False).returncode == 0


@pytest.fixture(scope="module")
@starts_servers
def driver() -> Iterator[ComposeDriver]:
    if not _docker_answers():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and no Docker engine answers: the compose tests cannot run")
        pytest.skip("no Docker engine answers (docker info failed)")
    if not _image_exists(APP_IMAGE):
        pytest.fail(f"{APP_IMAGE} is missing: run `make compose-images` first")
    commands = ComposeCommands(f"agentchat-attack-{os.getpid()}",
                               files=(REPO / "docker-compose.yml", OFFLINE_FILE),
                               compose=tuple(compose_cli()), secrets=stack_secrets())
    stack = ComposeDriver(Shape(), offline=True, commands=commands)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def _attacker(driver: ComposeDriver, script: str, env: dict[str, str] | None = None,
              network: str = "backplane") -> dict[str, str]:
    """Runs ``script`` (Python, printing one JSON object) in a fresh container of the
    app image on the stack's ``network``: a process that can reach the services but
    was given no credential beyond ``env``."""
    argv = ["docker", "run", "--rm", "--network", f"{driver.commands.project}_{network}"]
    for name, value in (env or {}).items():
        argv += ["-e", f"{name}={value}"]
    argv += [APP_IMAGE, "python", "-c", textwrap.dedent(script)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    answer: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


# -- from this host ------------------------------------------------------------------------
def test_data_stores_publish_no_port(driver: ComposeDriver) -> None:
    for container in driver.containers:
        ports = subprocess.run(["docker", "port", container.name], capture_output=True,
                               text=True, timeout=30, check=False).stdout.split()
        if container.service in DATA_STORES:
            assert ports == [], f"{container.service} publishes {ports}"
        elif container.service in ("auth", "backend"):
            published = [p for p in ports if ":" in p]
            assert published and all(p.startswith("127.0.0.1:") for p in published), ports


def test_the_internal_api_and_metrics_are_not_on_the_public_port(
        driver: ComposeDriver) -> None:
    token = driver.secrets()["INTERNAL_TOKEN"]
    with httpx.Client(base_url=driver.backend_url(), timeout=10) as http:
        internal = http.get("/internal/users/usr_x/messages",
                            headers={"Authorization": f"Bearer {token}"})
        assert internal.status_code == 404
        assert http.get("/metrics").status_code == 404
        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert not {"postgres", "redis", "clickhouse", "bridge"} & set(ready.text.split('"'))
    with httpx.Client(base_url=driver.auth_url, timeout=10) as http:
        assert http.get("/metrics").status_code == 404


# -- from a container on the internal network ----------------------------------------------
REDIS_PROBE = """
    import json, os
    import redis

    def attempt(user, password, *command):
        client = redis.Redis(host="redis", username=user, password=password,
                             socket_timeout=5)
        try:
            client.execute_command(*command)
            return "allowed"
        except redis.exceptions.NoPermissionError:
            return "NOPERM"
        except redis.exceptions.ResponseError as exc:
            return str(exc).split()[0]
        except redis.exceptions.AuthenticationError as exc:  # the reply's text, no prefix
            return "WRONGPASS" if "invalid username-password" in str(exc) else "NOAUTH"
        finally:
            client.close()

    e = os.environ
    print(json.dumps({
        "anonymous ping": attempt(None, None, "PING"),
        "anonymous read": attempt(None, None, "XRANGE", "u:{usr_x}:events", "-", "+"),
        "wrong password": attempt("backend", "not-the-password", "PING"),
        "worker mints a ticket": attempt("worker", e["W"], "SET", "wsticket:x", "{}"),
        "worker lifts a revocation": attempt("worker", e["W"], "DEL", "revoked:sid:x"),
        "auth reads a history": attempt("auth", e["A"], "XRANGE", "u:{usr_x}:events", "-", "+"),
        "auth queues a run": attempt("auth", e["A"], "XADD", "runs:queue", "*", "a", "b"),
        "backend lifts a revocation": attempt("backend", e["B"], "DEL", "revoked:sid:x"),
        "backend resets a throttle": attempt("backend", e["B"], "DEL", "throttle:address:x"),
        "backend flushes": attempt("backend", e["B"], "FLUSHALL"),
        "worker lists keys": attempt("worker", e["W"], "KEYS", "*"),
        "auth reconfigures": attempt("auth", e["A"], "CONFIG", "SET", "maxmemory", "1"),
        "backend reads a revocation": attempt("backend", e["B"], "EXISTS", "revoked:sid:x"),
        "worker emits": attempt("worker", e["W"], "HGET", "u:{usr_x}:meta", "seq"),
        "auth announces a revocation": attempt("auth", e["A"], "PUBLISH", "auth:revocations",
                                               "{}"),
        "auth publishes an event": attempt("auth", e["A"], "PUBLISH", "u:{usr_x}:live", "{}"),
        "worker announces a revocation": attempt("worker", e["W"], "PUBLISH",
                                                 "auth:revocations", "{}"),
    }))
"""


def test_redis_refuses_anonymous_and_other_services_commands(driver: ComposeDriver) -> None:
    given = driver.secrets()
    answers = _attacker(driver, REDIS_PROBE, {"A": given["REDIS_AUTH_PASSWORD"],
                                              "B": given["REDIS_BACKEND_PASSWORD"],
                                              "W": given["REDIS_WORKER_PASSWORD"]})
    assert answers.pop("backend reads a revocation") == "allowed"
    assert answers.pop("worker emits") == "allowed"
    assert answers.pop("auth announces a revocation") == "allowed"
    assert answers.pop("anonymous ping") == "NOAUTH"
    assert answers.pop("anonymous read") == "NOAUTH"
    assert answers.pop("wrong password") == "WRONGPASS"
    assert answers == dict.fromkeys(answers, "NOPERM"), answers


POSTGRES_PROBE = """
    import asyncio, json, os
    import asyncpg

    async def attempt(user, password, statement):
        try:
            conn = await asyncpg.connect(host="postgres", user=user, password=password,
                                         database="agentchat", timeout=5)
        except Exception as exc:
            return type(exc).__name__
        try:
            await conn.execute(statement)
            return "allowed"
        except Exception as exc:
            return type(exc).__name__
        finally:
            await conn.close()

    async def main():
        e = os.environ
        return {
            "no password": await attempt("postgres", "", "SELECT 1"),
            "wrong password": await attempt("agentchat_app", "nope", "SELECT 1"),
            "app reads its threads": await attempt("agentchat_app", e["P"],
                                                   "SELECT count(*) FROM app.threads"),
            "app reads users": await attempt("agentchat_app", e["P"],
                                             "SELECT count(*) FROM auth.users"),
            "app changes the schema": await attempt("agentchat_app", e["P"],
                                                    "CREATE TABLE app.x (a int)"),
            "auth reads messages": await attempt("agentchat_auth", e["U"],
                                                 "SELECT count(*) FROM app.messages"),
            "auth creates in public": await attempt("agentchat_auth", e["U"],
                                                    "CREATE TABLE public.x (a int)"),
        }

    print(json.dumps(asyncio.run(main())))
"""


def test_postgres_roles_see_only_their_own_schema(driver: ComposeDriver) -> None:
    given = driver.secrets()
    answers = _attacker(driver, POSTGRES_PROBE, {"P": given["POSTGRES_APP_PASSWORD"],
                                                 "U": given["POSTGRES_AUTH_PASSWORD"]})
    assert answers.pop("app reads its threads") == "allowed"
    assert answers.pop("no password") in ("InvalidPasswordError", "ClientConfigurationError")
    assert answers.pop("wrong password") == "InvalidPasswordError"
    assert answers == dict.fromkeys(answers, "InsufficientPrivilegeError"), answers


HTTP_PROBE = """
    import json
    import httpx

    def status(url, **headers):
        try:
            return str(httpx.get(url, headers=headers, timeout=5).status_code)
        except httpx.HTTPError as exc:
            return type(exc).__name__

    print(json.dumps({
        "clickhouse without a password": status("http://clickhouse:8123/?query=SELECT%201"),
        "internal API without the token": status(
            "http://backend:8010/internal/users/usr_x/messages"),
        "internal API with a wrong token": status(
            "http://backend:8010/internal/users/usr_x/messages",
            Authorization="Bearer not-the-token"),
    }))
"""


def test_unauthenticated_calls_inside_the_network_are_refused(driver: ComposeDriver) -> None:
    answers = _attacker(driver, HTTP_PROBE)
    assert answers["clickhouse without a password"] in ("401", "403", "516")
    assert answers["internal API without the token"] == "401"
    assert answers["internal API with a wrong token"] == "401"


# -- production settings -------------------------------------------------------------------
@pytest.mark.parametrize(("service", "variable"), [
    ("auth", "AUTH_DATABASE_URL"), ("backend", "BACKEND_INTERNAL_TOKEN"),
    ("worker", "WORKER_BACKEND_TOKEN"), ("migrate", "BACKEND_DATABASE_URL")])
def test_production_with_the_development_defaults_refuses_to_start(
        driver: ComposeDriver, service: str, variable: str) -> None:
    """No secret set: every default is a dev-insecure placeholder."""
    env = {k: v for k, v in os.environ.items()
           if k not in driver.commands.secrets and k != "APP_ENVIRONMENT"}
    env["APP_ENVIRONMENT"] = "production"
    argv = [*driver.commands.base(), "run", "--rm", "--no-deps", service]
    if service == "migrate":  # its command is a shell line; run the backend's part
        argv += ["python", "-m", "backend", "migrate"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False,
                          cwd=REPO, env=env)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert variable in output, output[-2000:]
    assert "dev-insecure" not in output, output[-2000:]  # names, never values


# -- last: what the services logged while attacked ------------------------------------------
def test_no_secret_in_any_log(driver: ComposeDriver, tmp_path: Path) -> None:
    (log,) = driver.collect_logs(tmp_path)
    text = log.read_text(errors="replace")
    assert len(text.splitlines()) > 20
    leaked = [name for name, value in driver.secrets().items() if value in text]
    assert leaked == []
