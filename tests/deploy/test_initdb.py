"""deploy/postgres/initdb/10-roles.sh, run under /bin/sh as the postgres image runs it:
the three roles with their passwords, the schemas' owner, and PUBLIC's privileges gone."""

from __future__ import annotations

import asyncpg
import pytest

from backend.app import MIGRATIONS as BACKEND_MIGRATIONS
from servicekit.migrations import migrate
from tests.deploy.conftest import PASSWORDS, RolesServer

ROLES = sorted(PASSWORDS)


async def test_a_missing_password_stops_the_script_before_any_change(
        roles_server: RolesServer, fresh_database: str) -> None:
    result = roles_server.apply_roles(fresh_database, AGENTCHAT_APP_PASSWORD="")
    assert result.returncode != 0
    assert "AGENTCHAT_APP_PASSWORD is not set" in result.stderr
    conn = await roles_server.connect(fresh_database)
    try:
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname IN ('auth', 'app')") == 0
    finally:
        await conn.close()


async def test_the_script_can_be_applied_again(roles_server: RolesServer,
                                               roles_database: str) -> None:
    again = roles_server.apply_roles(roles_database)
    assert again.returncode == 0, again.stderr


async def test_the_roles_log_in_with_their_passwords_and_no_powers(
        roles_server: RolesServer, roles_database: str) -> None:
    for role in ROLES:
        conn = await roles_server.connect(roles_database, role)
        try:
            assert await conn.fetchval("SELECT current_user") == role
            powers = await conn.fetchrow(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
                "FROM pg_roles WHERE rolname = current_user")
            assert not any(powers.values()), powers
        finally:
            await conn.close()
    wrong = roles_server.url(roles_database, "agentchat_app").replace("ap%27p", "app", 1)
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong)


async def test_the_owner_owns_the_schemas_and_public_is_closed(
        roles_server: RolesServer, roles_database: str) -> None:
    conn = await roles_server.connect(roles_database)
    try:
        owners = dict(await conn.fetch(
            "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace "
            "WHERE nspname IN ('auth', 'app')"))
        assert owners == {"auth": "agentchat", "app": "agentchat"}
        # PUBLIC (grantee 0) keeps no privilege on the database, nor CREATE on public
        public_on_database = await conn.fetchval(
            "SELECT count(*) FROM pg_database, aclexplode(datacl) AS acl "
            "WHERE datname = $1 AND acl.grantee = 0", roles_database)
        public_creates = await conn.fetchval(
            "SELECT count(*) FROM pg_namespace, aclexplode(nspacl) AS acl "
            "WHERE nspname = 'public' AND acl.grantee = 0 AND privilege_type = 'CREATE'")
        assert (public_on_database, public_creates) == (0, 0)
        for role in ROLES:
            can = await conn.fetchrow(
                "SELECT has_database_privilege($1, $2, 'CONNECT') AS connect, "
                "has_database_privilege($1, $2, 'CREATE') AS create_schema, "
                "has_database_privilege($1, $2, 'TEMPORARY') AS temporary, "
                "has_schema_privilege($1, 'public', 'CREATE') AS create_in_public",
                role, roles_database)
            assert dict(can) == {"connect": True, "create_schema": False, "temporary": False,
                                 "create_in_public": False}, role
    finally:
        await conn.close()


async def test_only_its_service_may_call_a_schemas_functions(
        roles_server: RolesServer, roles_database: str) -> None:
    """The functions the owner's migrations create (``app.create_run`` and the
    rest) run for ``agentchat_app`` only: PUBLIC, and so the auth service's role,
    may not call them; so after the migrations, and after the script again."""
    await migrate(roles_server.url(roles_database, "agentchat"), BACKEND_MIGRATIONS, "app")
    await _only_the_app_executes(roles_server, roles_database)
    again = roles_server.apply_roles(roles_database)
    assert again.returncode == 0, again.stderr
    await _only_the_app_executes(roles_server, roles_database)
    app = await roles_server.connect(roles_database, "agentchat_app")
    try:  # the backend's role calls them (a user with no runs: nothing to dispatch)
        assert await app.fetch("SELECT * FROM app.top_up_users($1, 4)", ["usr_none"]) == []
    finally:
        await app.close()


async def _only_the_app_executes(roles_server: RolesServer, database: str) -> None:
    conn = await roles_server.connect(database)
    try:
        functions = [row["oid"] for row in await conn.fetch(
            "SELECT p.oid::regprocedure::text AS oid FROM pg_proc p "
            "WHERE p.pronamespace = 'app'::regnamespace")]
        assert "app.create_run(text,text,text,text,text,text,integer,integer,integer," \
               "text,text[])" in functions
        for function in functions:
            public = await conn.fetchval(
                "SELECT count(*) FROM pg_proc, aclexplode(coalesce(proacl, "
                "acldefault('f', proowner))) AS acl WHERE oid = $1::regprocedure "
                "AND acl.grantee = 0", function)
            assert public == 0, function
            can = {role: await conn.fetchval(
                "SELECT has_function_privilege($1, $2, 'EXECUTE')", role, function)
                for role in ROLES}
            assert can == {"agentchat": True, "agentchat_app": True,
                           "agentchat_auth": False}, function
    finally:
        await conn.close()
