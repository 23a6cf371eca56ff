"""runs: creation, ending and dispatch as functions, one round trip each

Each function is one transaction (the statement that calls it) taking its locks in
the order every writer of runs takes them: the thread's row, then the user's
advisory lock. Their logic is documented where they are called (backend/runs.py).

Revision ID: 0005
"""

from alembic import op

revision = "0005"
down_revision = "0004"

#: Dispatch the user's oldest waiting runs that may go now: the first of each free
#: thread, as many as the window has room for. Takes the user's lock.
TOP_UP = """
CREATE FUNCTION app.top_up(p_user text, p_window int) RETURNS SETOF app.runs
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_user, 0));
    RETURN QUERY
    WITH room AS (
        SELECT greatest(p_window - count(*), 0) AS n FROM app.runs
        WHERE user_id = p_user AND status = 'queued' AND dispatched_at IS NOT NULL
    ), firsts AS (
        SELECT DISTINCT ON (r.thread_id) r.id, r.created_at FROM app.runs r
        WHERE r.user_id = p_user AND r.status = 'queued' AND r.dispatched_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM app.runs a WHERE a.thread_id = r.thread_id
                          AND a.status IN ('queued', 'running')
                          AND a.dispatched_at IS NOT NULL)
        ORDER BY r.thread_id, r.created_at, r.id
    ), chosen AS (
        SELECT id FROM firsts ORDER BY created_at, id LIMIT (SELECT n FROM room)
    )
    UPDATE app.runs SET dispatched_at = now() WHERE id IN (SELECT id FROM chosen)
    RETURNING app.runs.*;
END
$$
"""

#: A run, created with its user message, or why not: ``outcome`` is ``created``,
#: ``not_found`` (no such thread of the user), ``too_many_runs`` (the user's limit),
#: ``ask`` (the thread has active runs, ``runs``, whose end only Redis may know yet:
#: called again with ``p_ended`` set), ``thread_busy`` (live runs and ``reject``) or
#: ``too_many_waiting``. Created, ``runs`` are the thread's live runs (to interrupt,
#: with ``interrupt``); the run is dispatched when its thread has none and the
#: user's window has room.
CREATE_RUN = """
CREATE FUNCTION app.create_run(
    p_thread text, p_user text, p_input text, p_run text, p_message text, p_agent text,
    p_max_active int, p_window int, p_max_waiting int, p_multitask text, p_ended text[])
RETURNS TABLE (outcome text, run app.runs, runs text[])
LANGUAGE plpgsql AS $$
DECLARE
    v_owner text;
    v_active bigint;
    v_in_queue bigint;
    v_live text[];
    v_run app.runs;
BEGIN
    SELECT user_id INTO v_owner FROM app.threads WHERE id = p_thread FOR UPDATE;
    IF v_owner IS DISTINCT FROM p_user THEN
        RETURN QUERY SELECT 'not_found', NULL::app.runs, NULL::text[];
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(p_user, 0));
    -- each statement's snapshot is taken after the locks: every run created before
    -- is seen (those creations held the locks until they committed). One pass over
    -- the user's active runs: the limit, the window, the thread's live runs.
    SELECT count(*), count(*) FILTER (WHERE status = 'queued' AND dispatched_at IS NOT NULL),
           coalesce(array_agg(id ORDER BY created_at, id)
                    FILTER (WHERE thread_id = p_thread
                            AND NOT id = ANY(coalesce(p_ended, '{}'))), '{}')
      INTO v_active, v_in_queue, v_live
      FROM app.runs WHERE user_id = p_user AND status IN ('queued', 'running');
    IF v_active >= p_max_active THEN
        RETURN QUERY SELECT 'too_many_runs', NULL::app.runs, NULL::text[];
        RETURN;
    END IF;
    IF cardinality(v_live) > 0 THEN
        IF p_ended IS NULL THEN
            RETURN QUERY SELECT 'ask', NULL::app.runs, v_live;
            RETURN;
        END IF;
        IF p_multitask = 'reject' THEN
            RETURN QUERY SELECT 'thread_busy', NULL::app.runs, v_live;
            RETURN;
        END IF;
        IF (SELECT count(*) FROM app.runs WHERE thread_id = p_thread AND status = 'queued'
            AND dispatched_at IS NULL) >= p_max_waiting THEN
            RETURN QUERY SELECT 'too_many_waiting', NULL::app.runs, v_live;
            RETURN;
        END IF;
    END IF;
    WITH message AS (
        INSERT INTO app.messages (id, thread_id, user_id, role, content, run_id)
        VALUES (p_message, p_thread, p_user, 'user', p_input, p_run)
    ), touched AS (
        UPDATE app.threads SET updated_at = now() WHERE id = p_thread
    )
    INSERT INTO app.runs (id, thread_id, user_id, agent, status, input, dispatched_at)
    VALUES (p_run, p_thread, p_user, p_agent, 'queued', p_input,
            CASE WHEN v_in_queue < p_window AND cardinality(v_live) = 0 THEN now() END)
    RETURNING * INTO v_run;
    RETURN QUERY SELECT 'created', v_run, v_live;
END
$$
"""

#: A run's end: its final status, its answer as an assistant message, its analytics
#: row (the outbox); then, when the user has runs waiting, those that may go now.
#: Rows: (``finished``, the run), then (``dispatched``, a run) for each; none when
#: the run is unknown or was final already.
FINISH_RUN = """
CREATE FUNCTION app.finish_run(
    p_run text, p_status text, p_result text, p_error jsonb, p_ts timestamptz,
    p_message text, p_duration_ms bigint, p_tool_calls int, p_error_code text,
    p_tools_note text, p_answer_tokens int, p_window int)
RETURNS TABLE (kind text, run app.runs)
LANGUAGE plpgsql AS $$
DECLARE
    v_user text;
    v_run app.runs;
BEGIN
    -- the thread's lock orders this with run creation (multitask policies)
    SELECT t.user_id INTO v_user FROM app.runs r JOIN app.threads t ON t.id = r.thread_id
     WHERE r.id = p_run FOR UPDATE OF t;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    WITH done AS (
        UPDATE app.runs SET status = p_status, result = p_result, error = p_error,
                            finished_at = p_ts, started_at = coalesce(started_at, p_ts),
                            tools_note = p_tools_note, answer_tokens = p_answer_tokens
         WHERE id = p_run AND status IN ('queued', 'running') RETURNING *
    ), answer AS (
        INSERT INTO app.messages (id, thread_id, user_id, role, content, run_id)
        SELECT p_message, thread_id, user_id, 'assistant', p_result, id FROM done
         WHERE p_result IS NOT NULL
    ), outbox AS (
        INSERT INTO app.run_outbox (run_id, row)
        SELECT id, jsonb_build_object(
            'run_id', id, 'user_id', user_id, 'thread_id', thread_id, 'agent', agent,
            'status', status, 'created_at', created_at, 'started_at', started_at,
            'finished_at', finished_at,
            'duration_ms', coalesce(nullif(p_duration_ms, 0),
                                    (extract(epoch FROM finished_at - started_at)
                                     * 1000)::bigint),
            'tool_calls', p_tool_calls, 'error_code', p_error_code)
        FROM done ON CONFLICT DO NOTHING
    )
    SELECT * INTO v_run FROM done;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT 'finished', v_run;
    IF EXISTS (SELECT 1 FROM app.runs w WHERE w.user_id = v_user AND w.status = 'queued'
               AND w.dispatched_at IS NULL) THEN
        RETURN QUERY SELECT 'dispatched', d FROM app.top_up(v_user, p_window) AS d;
    END IF;
END
$$
"""


def upgrade() -> None:
    for function in (TOP_UP, CREATE_RUN, FINISH_RUN):
        op.execute(function)


def downgrade() -> None:
    op.execute("DROP FUNCTION app.finish_run")
    op.execute("DROP FUNCTION app.create_run")
    op.execute("DROP FUNCTION app.top_up")
