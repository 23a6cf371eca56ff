"""A Postgres server of its own for the roles' tests (roles are server-wide, so these
tests do not share the stack's), with password authentication on for the agentchat
roles; the superuser ``postgres`` still logs in by trust. Each test module takes
fresh databases from it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest

from e2e.stack import LocalStack, StackConfig, postgres_bin
from tests.conftest import starts_servers

ROOT = Path(__file__).resolve().parents[2]
INIT_SCRIPT = ROOT / "deploy" / "postgres" / "initdb" / "10-roles.sh"
#: passwords a careless script would mangle: quotes, a backslash, a dollar, spaces
PASSWORDS = {"agentchat": "own'er \\pw $HOME",
             "agentchat_auth": "au\"th' -- pw;",
             "agentchat_app": "ap'p :'pw' \\\\"}
PASSWORD_ENV = {"AGENTCHAT_OWNER_PASSWORD": PASSWORDS["agentchat"],
                "AGENTCHAT_AUTH_PASSWORD": PASSWORDS["agentchat_auth"],
                "AGENTCHAT_APP_PASSWORD": PASSWORDS["agentchat_app"]}
_HBA = "host all agentchat,agentchat_auth,agentchat_app all scram-sha-256\n"
_SETTINGS_PREFIXES = ("AUTH_", "BACKEND_", "AGENTCHAT_", "PG", "POSTGRES_")
#: the service modules, the prefix of their settings and the schema they own
SERVICES = {"auth": ("AUTH_", "auth"), "backend": ("BACKEND_", "app")}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS_PREFIXES)}
    return {**env, **extra}


@dataclass(frozen=True)
class RolesServer:
    port: int

    def url(self, database: str, role: str = "postgres") -> str:
        user = role if role not in PASSWORDS else f"{role}:{quote(PASSWORDS[role], safe='')}"
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    async def connect(self, database: str, role: str = "postgres") -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(self.url(database, role))
        return conn

    async def create_database(self) -> str:
        name = f"roles_{uuid.uuid4().hex[:12]}"
        conn = await self.connect("postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return name

    def apply_roles(self, database: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run deploy/postgres/initdb/10-roles.sh as the postgres image would."""
        variables = {"PATH": f"{postgres_bin()}:{os.environ['PATH']}", "PGHOST": "127.0.0.1",
                     "PGPORT": str(self.port), "POSTGRES_USER": "postgres",
                     "POSTGRES_DB": database, **PASSWORD_ENV, **env}
        return subprocess.run(["sh", str(INIT_SCRIPT)], env=_env(**variables),
                              capture_output=True, text=True, timeout=60, check=False)

    def run_service(self, module: str, database: str, role: str, *args: str
                    ) -> subprocess.CompletedProcess[str]:
        """``python -m <module> <args>`` with its database URL for ``role``."""
        prefix, _ = SERVICES[module]
        env = _env(**{f"{prefix}DATABASE_URL": self.url(database, role),
                      f"{prefix}STARTUP_TIMEOUT_S": "10"})
        return subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="session")
@starts_servers
def roles_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolesServer]:
    stack = LocalStack(StackConfig.for_tests(tmp_path_factory.mktemp("roles")))
    stack.start(only=("postgres",))
    try:
        hba = stack.root / "postgres" / "pg_hba.conf"
        hba.write_text(_HBA + hba.read_text())
        subprocess.run([str(postgres_bin() / "psql"), "-h", "127.0.0.1", "-p",
                        str(stack.config.ports.postgres), "-U", "postgres", "-d", "postgres",
                        "-tAc", "SELECT pg_reload_conf()"], check=True, capture_output=True)
        yield RolesServer(stack.config.ports.postgres)
    finally:
        stack.stop()


@pytest.fixture
async def fresh_database(roles_server: RolesServer) -> str:
    """A new, empty database (the roles not applied to it yet)."""
    return await roles_server.create_database()


@pytest.fixture
async def roles_database(roles_server: RolesServer, fresh_database: str) -> str:
    """A new database with the roles applied, not migrated."""
    result = roles_server.apply_roles(fresh_database)
    assert result.returncode == 0, result.stderr
    return fresh_database
