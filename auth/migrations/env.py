"""Alembic environment; run by servicekit.migrate with an open connection."""

from alembic import context

config = context.config
context.configure(connection=config.attributes["connection"],
                  version_table_schema=config.attributes["schema"])
with context.begin_transaction():
    context.run_migrations()
