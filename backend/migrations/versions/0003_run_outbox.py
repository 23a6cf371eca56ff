"""runs: a user's active runs by index; the analytics outbox of finished runs

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    # a user's active runs (limits, the dispatch window) without a join
    op.execute("CREATE INDEX runs_user_active_idx ON app.runs (user_id, created_at) "
               "WHERE status IN ('queued','running')")
    # a finished run's analytics row, written in the transaction that ended it and
    # removed once it is on the ingest stream: never lost, whoever ended the run
    op.execute("CREATE TABLE app.run_outbox (run_id text PRIMARY KEY, "
               "row jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")


def downgrade() -> None:
    op.execute("DROP TABLE app.run_outbox")
    op.execute("DROP INDEX app.runs_user_active_idx")
