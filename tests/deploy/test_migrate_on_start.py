"""``migrate_on_start`` false: a service under its restricted role does not migrate;
it waits for its schema to be at the newest revision and names what is missing.
``python -m <service> migrate`` fails clearly when its role may not migrate."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI

from auth.app import MIGRATIONS as AUTH_MIGRATIONS
from auth.app import create_app as create_auth
from auth.config import AuthSettings
from backend.app import create_app as create_backend
from backend.config import BackendSettings
from servicekit.migrations import SchemaNotCurrent, migrate, prepare_schema
from tests.deploy.conftest import RolesServer


async def _start(app: FastAPI) -> None:
    async with app.router.lifespan_context(app):
        raise AssertionError("the service started on an unmigrated schema")


async def test_auth_refuses_an_unmigrated_schema(roles_server: RolesServer,
                                                 roles_database: str) -> None:
    settings = AuthSettings(database_url=roles_server.url(roles_database, "agentchat_auth"),
                            migrate_on_start=False, startup_timeout_s=0.5)
    with pytest.raises(SchemaNotCurrent, match="schema auth is at revision none, this build "
                       "needs 0002: run the migrations"):
        await _start(create_auth(settings).public)


async def test_backend_refuses_an_unmigrated_schema(roles_server: RolesServer,
                                                    roles_database: str) -> None:
    settings = BackendSettings(database_url=roles_server.url(roles_database, "agentchat_app"),
                               migrate_on_start=False, startup_timeout_s=0.5)
    with pytest.raises(SchemaNotCurrent, match="schema app is at revision none, this build "
                       "needs 0007: run the migrations"):
        await _start(create_backend(settings).public)
    conn = await roles_server.connect(roles_database)
    try:  # and it tried nothing: the schema is as the roles' script left it
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'app'::regnamespace") == 0
    finally:
        await conn.close()


async def test_a_waiting_service_proceeds_once_the_owner_migrated(
        roles_server: RolesServer, roles_database: str) -> None:
    waiting = asyncio.create_task(prepare_schema(
        roles_server.url(roles_database, "agentchat_auth"), AUTH_MIGRATIONS, "auth",
        migrate_on_start=False, timeout=30))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    await migrate(roles_server.url(roles_database, "agentchat"), AUTH_MIGRATIONS, "auth")
    await asyncio.wait_for(waiting, timeout=10)


def test_migrate_fails_clearly_without_the_owners_rights(roles_server: RolesServer,
                                                         roles_database: str) -> None:
    result = roles_server.run_service("auth", roles_database, "agentchat_auth", "migrate")
    assert result.returncode == 1
    assert "migrating schema auth failed" in result.stderr
    assert "permission denied for schema auth" in result.stderr
