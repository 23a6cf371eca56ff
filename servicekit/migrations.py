"""Apply a service's alembic migrations at start, one replica at a time."""

from __future__ import annotations

import zlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

__all__ = ["MIGRATION_MISTAKES", "migrate", "run_environment"]

#: errors of a migration itself (not of reaching the database): retrying cannot help
MIGRATION_MISTAKES: tuple[type[BaseException], ...] = (ProgrammingError, CommandError)


async def migrate(dsn: str, migrations: Path, schema: str) -> None:
    """Bring ``schema`` to the newest revision of the scripts in ``migrations``."""
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, migrations, schema)
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, migrations: Path, schema: str) -> None:
    lock_id = zlib.crc32(f"migrate:{schema}".encode())
    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    command.upgrade(config, "head")


def run_environment() -> None:
    """The body of every service's alembic ``env.py``: migrate on the open connection."""
    from alembic import context

    config = context.config
    context.configure(connection=config.attributes["connection"],
                      version_table_schema=config.attributes["schema"])
    with context.begin_transaction():
        context.run_migrations()
