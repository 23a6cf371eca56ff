"""runs.dispatched_at: a queued run waits here until its thread is free (multitask)

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute("ALTER TABLE app.runs ADD COLUMN dispatched_at timestamptz")
    op.execute("UPDATE app.runs SET dispatched_at = created_at")
    op.execute("CREATE INDEX runs_pending_idx ON app.runs (thread_id, created_at) "
               "WHERE status = 'queued' AND dispatched_at IS NULL")


def downgrade() -> None:
    op.execute("DROP INDEX app.runs_pending_idx")
    op.execute("ALTER TABLE app.runs DROP COLUMN dispatched_at")
