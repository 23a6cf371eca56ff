"""users, sessions, refresh tokens

Revision ID: 0001
"""

from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    statements = """
        CREATE TABLE auth.users (
            id             text PRIMARY KEY,
            email          text NOT NULL UNIQUE,
            password_hash  text NOT NULL,
            display_name   text NOT NULL DEFAULT '',
            created_at     timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE auth.sessions (
            id            text PRIMARY KEY,
            user_id       text NOT NULL REFERENCES auth.users(id) ON DELETE CASCADE,
            user_agent    text NOT NULL DEFAULT '',
            created_at    timestamptz NOT NULL DEFAULT now(),
            last_used_at  timestamptz NOT NULL DEFAULT now(),
            expires_at    timestamptz NOT NULL,
            revoked_at    timestamptz
        );
        CREATE INDEX sessions_user_idx ON auth.sessions (user_id);
        CREATE TABLE auth.refresh_tokens (
            token_hash  bytea PRIMARY KEY,
            session_id  text NOT NULL REFERENCES auth.sessions(id) ON DELETE CASCADE,
            issued_at   timestamptz NOT NULL DEFAULT now(),
            spent_at    timestamptz
        );
        CREATE INDEX refresh_tokens_session_idx ON auth.refresh_tokens (session_id);
    """
    for statement in statements.split(";"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE auth.refresh_tokens")
    op.execute("DROP TABLE auth.sessions")
    op.execute("DROP TABLE auth.users")
