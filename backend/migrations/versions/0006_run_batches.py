"""runs: many creations, or many endings, in one transaction

``app.create_runs`` and ``app.finish_runs`` apply ``app.create_run`` and
``app.finish_run`` to each element of their arrays, in order, in the one
transaction of the statement that calls them: a transaction's fixed cost (the
round trip, the executor's start, the commit) is paid once for the whole batch.

They first take every lock the batch can need, in the order every writer of runs
takes them: the threads' rows (by id), then the users' advisory locks (by key).
Two batches, or a batch and a single call, so never wait on each other in a
cycle; the functions' own lock calls then find their locks held.

Revision ID: 0006
"""

from alembic import op

revision = "0006"
down_revision = "0005"

#: Takes the threads' rows, then the users' advisory locks, each set in one order.
#: ``p_threads[i]`` is locked only if it is ``p_users[i]``'s: a request naming
#: another user's thread never holds that thread for the rest of the batch.
LOCK_ALL = """
CREATE FUNCTION app.lock_threads_and_users(p_threads text[], p_users text[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_key bigint;
BEGIN
    PERFORM 1 FROM app.threads t JOIN unnest(p_threads, p_users) AS o(thread, owner)
        ON t.id = o.thread AND t.user_id = o.owner
      ORDER BY t.id FOR UPDATE OF t;
    FOR v_key IN SELECT DISTINCT hashtextextended(u, 0) FROM unnest(p_users) AS u ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(v_key);
    END LOOP;
END
$$
"""

#: ``app.create_run`` for each element (``idx`` from 1), the limits shared; a
#: request is never asked again here (``p_ended`` NULL: ``ask`` comes back as
#: from a single call). A thread that is not the requester's is answered
#: ``not_found`` without a lock (``app.create_run`` would lock it first, and the
#: batch's transaction hold it).
CREATE_RUNS = """
CREATE FUNCTION app.create_runs(
    p_thread text[], p_user text[], p_input text[], p_run text[], p_message text[],
    p_agent text[], p_multitask text[], p_max_active int, p_window int, p_max_waiting int)
RETURNS TABLE (idx int, outcome text, run app.runs, runs text[])
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM app.lock_threads_and_users(p_thread, p_user);
    FOR i IN 1 .. cardinality(p_thread) LOOP
        IF NOT EXISTS (SELECT 1 FROM app.threads
                        WHERE id = p_thread[i] AND user_id = p_user[i]) THEN
            RETURN QUERY SELECT i, 'not_found', NULL::app.runs, NULL::text[];
            CONTINUE;
        END IF;
        RETURN QUERY SELECT i, c.outcome, c.run, c.runs FROM app.create_run(
            p_thread[i], p_user[i], p_input[i], p_run[i], p_message[i], p_agent[i],
            p_max_active, p_window, p_max_waiting, p_multitask[i], NULL) AS c;
    END LOOP;
END
$$
"""

#: ``app.finish_run`` for each element (``idx`` from 1): its rows, as from a single
#: call. The locks are those of the runs' threads and their users.
FINISH_RUNS = """
CREATE FUNCTION app.finish_runs(
    p_run text[], p_status text[], p_result text[], p_error jsonb[], p_ts timestamptz[],
    p_message text[], p_duration_ms bigint[], p_tool_calls int[], p_error_code text[],
    p_tools_note text[], p_answer_tokens int[], p_window int)
RETURNS TABLE (idx int, kind text, run app.runs)
LANGUAGE plpgsql AS $$
DECLARE
    v_threads text[];
    v_users text[];
BEGIN
    SELECT array_agg(t.id), array_agg(t.user_id) INTO v_threads, v_users
      FROM app.threads t WHERE t.id IN (SELECT r.thread_id FROM app.runs r
                                         WHERE r.id = ANY(p_run));
    PERFORM app.lock_threads_and_users(v_threads, v_users);
    FOR i IN 1 .. cardinality(p_run) LOOP
        RETURN QUERY SELECT i, f.kind, f.run FROM app.finish_run(
            p_run[i], p_status[i], p_result[i], p_error[i], p_ts[i], p_message[i],
            p_duration_ms[i], p_tool_calls[i], p_error_code[i], p_tools_note[i],
            p_answer_tokens[i], p_window) AS f;
    END LOOP;
END
$$
"""


def upgrade() -> None:
    for function in (LOCK_ALL, CREATE_RUNS, FINISH_RUNS):
        op.execute(function)


def downgrade() -> None:
    op.execute("DROP FUNCTION app.finish_runs")
    op.execute("DROP FUNCTION app.create_runs")
    op.execute("DROP FUNCTION app.lock_threads_and_users")
