"""runs: starts and their top-ups in one statement

``app.start_runs`` marks runs running (from queued only: a late start never
reopens an end) and dispatches what their users' freed queue places let go, in
one transaction, where a batch of starts took three round trips (the update, the
users with waiting runs, then a top-up each). ``app.top_up_users`` tops up
several users in one transaction (the safety net, a deleted thread).

Locks: the users' advisory locks, in key order as ``app.lock_threads_and_users``
takes them, before any run row: every writer of runs takes a user's lock before
it touches that user's runs, so none waits for a user's lock while it holds a
run row another one needs.

Revision ID: 0007
"""

from alembic import op

revision = "0007"
down_revision = "0006"

#: ``app.top_up`` for each of these users with runs waiting for a dispatch (each
#: once, in key order): the runs dispatched.
TOP_UP_USERS = """
CREATE FUNCTION app.top_up_users(p_users text[], p_window int) RETURNS SETOF app.runs
LANGUAGE plpgsql AS $$
DECLARE
    v_user text;
BEGIN
    FOR v_user IN
        SELECT u FROM (SELECT DISTINCT u FROM unnest(p_users) AS u) AS d
         WHERE EXISTS (SELECT 1 FROM app.runs r WHERE r.user_id = d.u
                         AND r.status = 'queued' AND r.dispatched_at IS NULL)
         ORDER BY hashtextextended(u, 0), u
    LOOP
        RETURN QUERY SELECT * FROM app.top_up(v_user, p_window);
    END LOOP;
END
$$
"""

#: Runs that started (``p_run[i]`` at ``p_ts[i]``): running, from queued only;
#: then their users' top-ups. Returns the runs dispatched.
START_RUNS = """
CREATE FUNCTION app.start_runs(p_run text[], p_ts timestamptz[], p_window int)
RETURNS SETOF app.runs LANGUAGE plpgsql AS $$
DECLARE
    v_users text[];
BEGIN
    SELECT array_agg(DISTINCT user_id) INTO v_users FROM app.runs
     WHERE id = ANY(p_run) AND status = 'queued';
    IF v_users IS NULL THEN
        RETURN;
    END IF;
    PERFORM app.lock_threads_and_users('{}', v_users);
    WITH started AS (
        UPDATE app.runs SET status = 'running', started_at = s.ts
          FROM unnest(p_run, p_ts) AS s(id, ts)
         WHERE app.runs.id = s.id AND app.runs.status = 'queued'
        RETURNING app.runs.user_id)
    SELECT array_agg(DISTINCT user_id) INTO v_users FROM started;
    IF v_users IS NOT NULL THEN
        RETURN QUERY SELECT * FROM app.top_up_users(v_users, p_window);
    END IF;
END
$$
"""


def upgrade() -> None:
    for function in (TOP_UP_USERS, START_RUNS):
        op.execute(function)


def downgrade() -> None:
    op.execute("DROP FUNCTION app.start_runs")
    op.execute("DROP FUNCTION app.top_up_users")
