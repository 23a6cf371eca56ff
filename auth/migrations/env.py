"""Alembic environment; run by servicekit.migrate with an open connection."""

from servicekit.migrations import run_environment

run_environment()
