"""A service's alembic migrations: applied at start (one replica at a time) or by a
one-shot ``python -m <service> migrate`` run as the schema's owner, in which case the
service only waits until its schema is at the newest revision."""

from __future__ import annotations

import asyncio
import logging
import zlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from servicekit.startup import retry_until

__all__ = [
    "MIGRATION_MISTAKES",
    "SchemaNotCurrent",
    "check_current",
    "migrate",
    "migrate_command",
    "prepare_schema",
    "run_environment",
]

log = logging.getLogger(__name__)

#: errors of a migration itself (not of reaching the database): retrying cannot help
MIGRATION_MISTAKES: tuple[type[BaseException], ...] = (ProgrammingError, CommandError)


class SchemaNotCurrent(RuntimeError):
    """The schema is not at the newest revision of this build's migrations."""


def _engine(dsn: str) -> AsyncEngine:
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    return create_async_engine(url, poolclass=NullPool)


def _config(migrations: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations))
    return config


async def migrate(dsn: str, migrations: Path, schema: str) -> None:
    """Bring ``schema`` to the newest revision of the scripts in ``migrations``."""
    engine = _engine(dsn)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, migrations, schema)
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, migrations: Path, schema: str) -> None:
    lock_id = zlib.crc32(f"migrate:{schema}".encode())
    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
    # CREATE SCHEMA IF NOT EXISTS would still need CREATE on the database, which the
    # schema's owner does without when the schema was made for it beforehand
    exists = connection.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :schema"),
                                {"schema": schema}).scalar()
    if not exists:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    config = _config(migrations)
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    command.upgrade(config, "head")


async def check_current(dsn: str, migrations: Path, schema: str) -> None:
    """Raise :class:`SchemaNotCurrent` unless ``schema`` is at the newest revision.

    Reads the alembic version table only: no DDL, so a role without any may call it.
    """
    needed = ScriptDirectory.from_config(_config(migrations)).get_heads()
    engine = _engine(dsn)
    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(_current_heads, schema)
    finally:
        await engine.dispose()
    if set(current) != set(needed):
        raise SchemaNotCurrent(
            f"schema {schema} is at revision {', '.join(current) or 'none'}, this build "
            f"needs {', '.join(needed)}: run the migrations")


def _current_heads(connection: Connection, schema: str) -> tuple[str, ...]:
    table = f'"{schema}".alembic_version'
    if connection.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is None:
        return ()
    return tuple(connection.execute(text(f"SELECT version_num FROM {table}")).scalars())


async def prepare_schema(dsn: str, migrations: Path, schema: str, *, migrate_on_start: bool,
                         timeout: float) -> None:
    """At a service's start: migrate ``schema``, or (``migrate_on_start`` false) wait
    up to ``timeout`` seconds for someone else to have migrated it."""
    if migrate_on_start:
        await retry_until(lambda: migrate(dsn, migrations, schema), what="postgres migrations",
                          give_up_on=MIGRATION_MISTAKES, timeout=timeout)
    else:
        await retry_until(lambda: check_current(dsn, migrations, schema),
                          what=f"postgres schema {schema} check",
                          give_up_on=MIGRATION_MISTAKES, timeout=timeout)


def migrate_command(dsn: str, migrations: Path, schema: str, *, timeout: float) -> int:
    """``python -m <service> migrate``: migrate ``schema`` once; the exit status."""
    try:
        asyncio.run(prepare_schema(dsn, migrations, schema, migrate_on_start=True,
                                   timeout=timeout))
    except Exception as exc:
        log.error("migrating schema %s failed: %s", schema, exc)
        return 1
    log.info("schema %s is at the newest revision", schema)
    return 0


def run_environment() -> None:
    """The body of every service's alembic ``env.py``: migrate on the open connection."""
    from alembic import context

    config = context.config
    context.configure(connection=config.attributes["connection"],
                      version_table_schema=config.attributes["schema"])
    with context.begin_transaction():
        context.run_migrations()
