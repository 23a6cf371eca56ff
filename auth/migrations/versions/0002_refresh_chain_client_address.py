"""refresh token chain (replaced_by) and the session's client address

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute("ALTER TABLE auth.refresh_tokens ADD COLUMN replaced_by bytea")
    op.execute("ALTER TABLE auth.sessions ADD COLUMN client_address text NOT NULL DEFAULT ''")


def downgrade() -> None:
    op.execute("ALTER TABLE auth.sessions DROP COLUMN client_address")
    op.execute("ALTER TABLE auth.refresh_tokens DROP COLUMN replaced_by")
