"""threads, messages, runs

Revision ID: 0001
"""

from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    statements = """
        CREATE TABLE app.threads (
            id          text PRIMARY KEY,
            user_id     text NOT NULL,
            title       text NOT NULL DEFAULT '',
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX threads_user_idx ON app.threads (user_id, updated_at DESC, id DESC);
        CREATE TABLE app.runs (
            id           text PRIMARY KEY,
            thread_id    text NOT NULL REFERENCES app.threads(id) ON DELETE CASCADE,
            user_id      text NOT NULL,
            agent        text NOT NULL,
            status       text NOT NULL CHECK (status IN
                           ('queued','running','succeeded','failed','cancelled','timed_out')),
            input        text NOT NULL,
            result       text,
            error        jsonb,
            created_at   timestamptz NOT NULL DEFAULT now(),
            started_at   timestamptz,
            finished_at  timestamptz
        );
        CREATE INDEX runs_thread_idx ON app.runs (thread_id, created_at);
        CREATE INDEX runs_active_idx ON app.runs (thread_id) WHERE status IN ('queued','running');
        CREATE TABLE app.messages (
            id          text PRIMARY KEY,
            thread_id   text NOT NULL REFERENCES app.threads(id) ON DELETE CASCADE,
            user_id     text NOT NULL,
            role        text NOT NULL CHECK (role IN ('user','assistant')),
            content     text NOT NULL,
            run_id      text,
            created_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX messages_thread_idx ON app.messages (thread_id, created_at, id);
    """
    for statement in statements.split(";"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE app.messages")
    op.execute("DROP TABLE app.runs")
    op.execute("DROP TABLE app.threads")
