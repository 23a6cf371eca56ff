"""runs: what a run's tools returned, summarised, and its answer's tokens as the
model provider counted them (its thread's memory)

Revision ID: 0004
"""

from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    # written with the run's end (bridge.memory.tool_note), read into the memory of
    # the thread's later runs
    op.execute("ALTER TABLE app.runs ADD COLUMN tools_note text, "
               "ADD COLUMN answer_tokens integer")


def downgrade() -> None:
    op.execute("ALTER TABLE app.runs DROP COLUMN tools_note, DROP COLUMN answer_tokens")
