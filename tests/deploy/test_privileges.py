"""After both migrations ran as the owner ``agentchat``: each service's role reads and
writes its own schema's rows, nothing of the other schema, and creates nothing; the
services' real stores work under their roles."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from redis.asyncio import Redis

from auth.store import Store as AuthStore
from auth.store import new_refresh_token
from backend.runs import RunTransitions
from backend.store import Store as BackendStore
from bridge.registry import ThreadRunRegistry
from e2e.scenarios import unique_email
from servicekit.postgres import create_pool
from tests.deploy.conftest import SERVICES, RolesServer

#: role, a row it writes in its own schema, a table of the other schema
CASES = {
    "agentchat_auth": ("INSERT INTO auth.users (id, email, password_hash) "
                       "VALUES ('usr_x', 'x@example.com', 'h')", "auth.users", "app.threads"),
    "agentchat_app": ("INSERT INTO app.threads (id, user_id) VALUES ('thr_x', 'usr_x')",
                      "app.threads", "auth.users"),
}
#: statements no service role may run (each with {own}: a table of its own schema)
FORBIDDEN = [
    "CREATE TABLE public.intruder (x int)",
    "CREATE TABLE auth.intruder (x int)",
    "CREATE TABLE app.intruder (x int)",
    "CREATE SCHEMA intruder",
    "CREATE TEMPORARY TABLE intruder (x int)",
    "CREATE VIEW public.intruder AS SELECT 1",
    "CREATE FUNCTION public.intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE INDEX intruder ON {own} (created_at)",
    "ALTER TABLE {own} ADD COLUMN intruder int",
    "DROP TABLE {own}",
    "TRUNCATE {own}",
]


@pytest.fixture(scope="module")
async def migrated(roles_server: RolesServer) -> str:
    """A database with the roles applied and both schemas migrated by the owner."""
    database = await roles_server.create_database()
    applied = roles_server.apply_roles(database)
    assert applied.returncode == 0, applied.stderr
    for module in SERVICES:
        result = roles_server.run_service(module, database, "agentchat", "migrate")
        assert result.returncode == 0, result.stderr
    return database


@pytest.fixture
async def as_role(roles_server: RolesServer, migrated: str,
                  request: pytest.FixtureRequest) -> AsyncIterator[asyncpg.Connection]:
    conn = await roles_server.connect(migrated, request.param)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.mark.parametrize("module", sorted(SERVICES))
def test_migrate_again_changes_nothing(roles_server: RolesServer, migrated: str,
                                       module: str) -> None:
    result = roles_server.run_service(module, migrated, "agentchat", "migrate")
    assert result.returncode == 0, result.stderr
    assert f"schema {SERVICES[module][1]} is at the newest revision" in result.stderr


async def test_the_owner_owns_every_table(roles_server: RolesServer, migrated: str) -> None:
    conn = await roles_server.connect(migrated)
    try:
        owners = {row["tableowner"] for row in await conn.fetch(
            "SELECT tableowner FROM pg_tables WHERE schemaname IN ('auth', 'app')")}
        tables = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname IN ('auth', 'app')")
    finally:
        await conn.close()
    assert owners == {"agentchat"} and tables >= 8  # six tables, two version tables


@pytest.mark.parametrize("as_role", sorted(CASES), indirect=True)
async def test_a_role_reads_and_writes_its_own_schema(as_role: asyncpg.Connection) -> None:
    insert, own, _ = CASES[await as_role.fetchval("SELECT current_user")]
    tx = as_role.transaction()
    await tx.start()
    try:
        await as_role.execute(insert)
        assert await as_role.fetchval(f"SELECT count(*) FROM {own} WHERE id LIKE '%_x'") == 1
        await as_role.execute(f"UPDATE {own} SET created_at = now() WHERE id LIKE '%_x'")
        await as_role.execute(f"DELETE FROM {own} WHERE id LIKE '%_x'")
    finally:
        await tx.rollback()


@pytest.mark.parametrize("as_role", sorted(CASES), indirect=True)
async def test_a_role_cannot_touch_the_other_schema(as_role: asyncpg.Connection) -> None:
    *_, other = CASES[await as_role.fetchval("SELECT current_user")]
    for statement in (f"SELECT count(*) FROM {other}", f"DELETE FROM {other}"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_role.execute(statement)


@pytest.mark.parametrize("statement", FORBIDDEN)
@pytest.mark.parametrize("as_role", sorted(CASES), indirect=True)
async def test_a_role_creates_and_alters_nothing(as_role: asyncpg.Connection,
                                                 statement: str) -> None:
    _, own, _ = CASES[await as_role.fetchval("SELECT current_user")]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role.execute(statement.format(own=own))


async def test_the_auth_store_works_as_agentchat_auth(roles_server: RolesServer,
                                                      migrated: str) -> None:
    pool = await create_pool(roles_server.url(migrated, "agentchat_auth"), max_size=2,
                             timeout_s=5)
    try:
        store = AuthStore(pool)
        user = await store.create_user(unique_email("roles"), "$argon2id$stand-in", "Ro")
        found = await store.user_by_email(user.email)
        assert found is not None and found[0] == user
        token, next_token = new_refresh_token(), new_refresh_token()
        session = await store.create_session(user.id, "pytest", "127.0.0.1",
                                             timedelta(hours=1), token)
        assert await store.rotate_refresh_token(token, next_token, grace_s=0) == (
            session, user.id)
        assert await store.revoke_sessions(user.id) == [session]
        assert not await store.session_active(session)
    finally:
        await pool.close()


async def test_the_backend_store_works_as_agentchat_app(roles_server: RolesServer,
                                                        migrated: str, redis: Redis) -> None:
    pool = await create_pool(roles_server.url(migrated, "agentchat_app"), max_size=2,
                             timeout_s=5)
    try:
        store = BackendStore(pool)
        thread = await store.create_thread("usr_roles", "first")
        renamed = await store.rename_thread("usr_roles", thread["id"], "renamed")
        assert renamed is not None and renamed["title"] == "renamed"
        runs = RunTransitions(store, redis, ThreadRunRegistry(redis))
        created = await runs.create("usr_roles", thread["id"], "hello", "echo")
        await runs.after_create(created)
        run = created.run
        messages, _ = await store.messages("usr_roles", thread["id"], 10, None)
        assert [m["content"] for m in messages] == ["hello"]
        stored = await store.run("usr_roles", run["id"])
        assert stored is not None and stored["status"] == "queued"
        assert await store.delete_thread("usr_roles", thread["id"]) == [(run["id"],
                                                                         run["agent"])]
    finally:
        await pool.close()
