"""Every write to a run, in one place: create, dispatch, start, finish.

A run is *created* queued; it is *dispatched* (``dispatched_at`` set, then a
queue entry appended) when its thread has no other dispatched active run and its
user has fewer than ``dispatch_window`` runs waiting in the queue; a worker
*starts* it (``agent_started``) and it *finishes* with its terminal event (a run
whose worker vanished is declared lost by the reaper and finishes the same way,
``agent_failed``). Each start and finish *tops up* its user: the oldest waiting
runs that may go now are dispatched.

Creation, ending and top-up are Postgres functions (migration 0005), each called
in one statement: one round trip, one transaction, its locks held for the time
Postgres itself takes, never across a network wait. Concurrent creations go
together (group commit, :class:`~servicekit.batching.Batcher`), as do the
endings of a lifecycle batch: ``app.create_runs`` and ``app.finish_runs``
(migration 0006) apply the single functions to each in one transaction, having
first taken all their locks in the same order (a creation alone goes the same
way). A batch's starts and their users' top-ups are one statement too
(``app.start_runs``, migration 0007). Locks: the thread's row, then the user's
advisory lock (transaction-scoped), so creations on one thread, and a
user's dispatch decisions on any replica, are serialised by Postgres. No Redis
round trip happens under a lock: a function decides which runs go
(``dispatched_at``) and returns them; the caller appends
their queue entries after the commit (:meth:`Dispatch.send`). A dispatch decided
but never appended (the process died in between) is appended again by
:meth:`RunTransitions.resend_unsent`: the append stores the entry's id in the
run's Redis hash in the same script, so a run is appended once.

The per-user window is the queue's fair share: one user's backlog waits here, in
Postgres, and never stands more than ``dispatch_window`` entries deep in front of
another user's run, whatever the number of workers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend.approvals import RunApprovals
from backend.store import ACTIVE, Store, new_id, run_json
from bridge.approvals import PENDING_FIELDS, pending_call
from bridge.cancel import request_cancel
from bridge.events import StoppedBy, parse_timestamp
from bridge.ingest import IngestBusy, append_rows
from bridge.limits import history_hour
from bridge.memory import Turn, encode_memory, within_budget
from bridge.protocol import Multitask
from bridge.queue import RunRequest
from bridge.registry import ThreadRunRegistry
from servicekit import ProblemError
from servicekit.autopipeline import AutoPipeline
from servicekit.batching import Batcher
from servicekit.redisclient import is_cluster
from servicekit.rediskeys import AGENTS_CATALOG, RUN_QUEUE, StreamShards, UserKeys

__all__ = ["Created", "Dispatch", "Ending", "Finished", "RunTransitions", "final_status"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_AGENTS_TTL_S = 1.0
#: Seconds a refused client is told to wait: runs last seconds to minutes.
RETRY_AFTER_S = 5
#: A dispatch older than this without its queue entry is appended again.
RESEND_AFTER_S = 5.0

#: A run, or why not (``app.create_run``: the outcomes are documented there).
_CREATE_RUN = "SELECT outcome, run, runs FROM app.create_run($1, $2, $3, $4, $5, $6, $7, $8, " \
              "$9, $10, $11)"
#: Many of them in one transaction (``app.create_runs``): (idx, outcome, run, runs).
_CREATE_RUNS = "SELECT idx, outcome, run, runs FROM app.create_runs($1, $2, $3, $4, $5, $6, " \
               "$7, $8, $9, $10)"
#: A run's end, and the runs it let go (``app.finish_run``).
_FINISH_RUN = "SELECT kind, run FROM app.finish_run($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, " \
              "$11, $12)"
#: Many of them in one transaction (``app.finish_runs``): (idx, kind, run).
_FINISH_RUNS = "SELECT idx, kind, run FROM app.finish_runs($1, $2, $3, $4, $5, $6, $7, $8, $9, " \
               "$10, $11, $12)"
#: Runs that started, and the runs their users' freed places let go (``app.start_runs``).
_START_RUNS = "SELECT * FROM app.start_runs($1, $2, $3)"
#: The runs these users' windows let go now (``app.top_up_users``).
_TOP_UP_USERS = "SELECT * FROM app.top_up_users($1, $2)"
#: Rows to put on the ingest stream (their transaction commits once they are there).
_OUTBOX_TAKE = """
DELETE FROM app.run_outbox WHERE run_id IN (
    SELECT run_id FROM app.run_outbox ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING row
"""
#: Dispatched runs still queued after a while: their queue entry may be missing.
_UNSENT = """
SELECT * FROM app.runs WHERE status = 'queued' AND dispatched_at IS NOT NULL
AND dispatched_at < now() - make_interval(secs => $1) ORDER BY dispatched_at LIMIT $2
"""

#: Users whose runs have waited for a dispatch a while.
_WAITING_LONG = """
SELECT DISTINCT user_id FROM app.runs WHERE status = 'queued' AND dispatched_at IS NULL
AND created_at < now() - make_interval(secs => $1) LIMIT $2
"""

#: The earlier answered runs of each run's thread, newest first (at most $4 each).
_TURNS = """
SELECT r.id AS run_id, p.input, p.result, p.tools_note, p.answer_tokens, p.created_at
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS r(id, thread_id, created_at)
CROSS JOIN LATERAL (
    SELECT input, result, tools_note, answer_tokens, created_at FROM app.runs p
    WHERE p.thread_id = r.thread_id AND p.created_at < r.created_at
      AND p.status = 'succeeded' AND p.result IS NOT NULL
    ORDER BY p.created_at DESC LIMIT $4) p
"""
#: the most earlier turns read for a run's memory (the budget usually keeps fewer)
_MEMORY_TURNS = 50

#: KEYS[1] the run queue, KEYS[2] the run's hash; ARGV[1] the hash's ttl, then the
#: entry's fields. Appends the run's entry unless one was appended before; returns
#: the entry's id either way.
_APPEND_LUA = """
local sent = redis.call('HGET', KEYS[2], 'q')
if sent then return sent end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('HSET', KEYS[2], 'q', id)
redis.call('EXPIRE', KEYS[2], ARGV[1])
return id
"""


def final_status(event_type: str, payload: dict[str, Any]) -> str:
    """The run's status after its terminal event."""
    if event_type == "agent_completed":
        return "succeeded"
    if event_type == "agent_cancelled":
        return "cancelled"
    return "timed_out" if payload.get("cause") == "timeout" else "failed"


@dataclass(slots=True)
class Dispatch:
    """Runs a committed transaction dispatched, to append to the queue after it."""

    transitions: RunTransitions
    rows: list[asyncpg.Record] = field(default_factory=list)

    async def send(self) -> None:
        """Append the runs' queue entries. A failure is logged, not raised: the run
        is committed, and :meth:`RunTransitions.resend_unsent` appends it later."""
        if self.rows:
            await self.transitions.append(self.rows)


@dataclass(frozen=True, slots=True)
class Created:
    run: dict[str, Any]
    dispatch: Dispatch
    interrupt: tuple[str, ...] = ()
    user_id: str = ""


@dataclass(frozen=True, slots=True)
class _Creation:
    """A creation's arguments of its own (the limits are the process's)."""

    thread_id: str
    user_id: str
    text: str
    run_id: str
    message_id: str
    agent: str
    multitask: str


@dataclass(frozen=True, slots=True)
class Ending:
    """A run's terminal event, as the lifecycle stream carries it."""

    run_id: str
    event_type: str
    payload: dict[str, Any]
    ts: datetime

    def arguments(self, message_id: str) -> tuple[Any, ...]:
        """``app.finish_run``'s arguments but the window: status, answer, error..."""
        payload, event_type = self.payload, self.event_type
        return (self.run_id, final_status(event_type, payload),
                payload.get("result") if event_type == "agent_completed" else None,
                json.dumps(payload["error"]) if event_type == "agent_failed" else None,
                self.ts, message_id, int(payload.get("duration_ms") or 0),
                int(payload.get("tool_calls") or 0),
                str((payload.get("error") or {}).get("code", "")),
                str(payload.get("tools_note") or "") or None, _count(payload.get("answer_tokens")))


@dataclass(frozen=True, slots=True)
class Finished:
    """A run's ending as applied: its record (None: it was final already)."""

    row: asyncpg.Record | None
    dispatch: Dispatch


class RunTransitions:
    """A run's life in Postgres and its queue entry in Redis; one per process."""

    def __init__(self, store: Store, redis: Redis, registry: ThreadRunRegistry, *,
                 default_agent: str = "supervisor", max_active_per_user: int = 20,
                 max_waiting_per_thread: int = 10, dispatch_window: int = 4,
                 history_bytes_per_hour: int | None = None, memory_tokens: int = 0,
                 run_hash_ttl_s: int = 86_400, approvals: RunApprovals | None = None) -> None:
        self._store = store
        self._approvals = approvals
        self._redis = redis
        self._registry = registry
        self._default_agent = default_agent
        self._max_active = max_active_per_user
        self._max_waiting = max_waiting_per_thread
        self._window = dispatch_window
        self._history_bytes = history_bytes_per_hour
        self._memory_tokens = memory_tokens
        self._ttl_s = run_hash_ttl_s
        self._queue = AutoPipeline(redis)  # the appends of concurrent transitions
        self._append = redis.register_script(_APPEND_LUA)
        self._cluster = is_cluster(redis)
        self._shards = StreamShards.of(RUN_QUEUE, cluster=self._cluster)
        self._agents: set[str] | None = None
        self._agents_read_at = float("-inf")
        # concurrent creations, and concurrent reads of memory, share statements
        self._creations = Batcher(self._create_batch, name="run-creations")
        self._turns = Batcher(self._turns_batch, name="run-memory")

    @property
    def pool(self) -> asyncpg.Pool:
        return self._store.pool

    async def known_agents(self) -> set[str] | None:
        """Agents announced by the workers; None while no worker has announced any.
        Read from Redis at most once a second (the catalog changes when workers start)."""
        now = time.monotonic()
        if now - self._agents_read_at > _AGENTS_TTL_S:
            names = await self._redis.hkeys(AGENTS_CATALOG)
            self._agents = ({n.decode() if isinstance(n, bytes) else n for n in names}
                            if names else None)
            self._agents_read_at = now
        return self._agents

    # -- create ----------------------------------------------------------------------
    async def create(self, user_id: str, thread_id: str, text: str, agent: str | None,
                     multitask: Multitask = "reject") -> Created:
        """Create a run, committed; its queue entry is appended by the caller
        (``created.dispatch.send()``), after whatever must reach the client first,
        and its thread's runs to interrupt are cancelled there too
        (:meth:`after_create`)."""
        agent = agent or self._default_agent
        known = await self.known_agents()
        if known is not None and agent not in known:
            raise ProblemError(422, "unknown_agent", f"no agent named {agent!r}")
        await self._check_history_quota(user_id)
        creation = _Creation(thread_id, user_id, text, new_id("run"), new_id("msg"), agent,
                             multitask)
        outcome, row, live = await self._creations.submit(creation)
        if outcome == "ask":  # no Redis round trip under the locks: asked, called again
            ended = await self._registry.ended(user_id, live)
            outcome, row, live = await self._create_run(creation, sorted(ended))
        if outcome == "not_found":
            raise ProblemError(404, "not_found", "no such thread")
        if outcome == "too_many_runs":
            raise ProblemError(
                429, "too_many_runs",
                f"at most {self._max_active} active runs per user; wait for one to end",
                {"Retry-After": str(RETRY_AFTER_S)})
        if outcome == "thread_busy":
            raise ProblemError(409, "thread_busy", f"run {live[0]} is active on this thread")
        if outcome == "too_many_waiting":
            raise ProblemError(
                429, "too_many_runs", f"at most {self._max_waiting} runs wait on one thread",
                {"Retry-After": str(RETRY_AFTER_S)})
        dispatch = Dispatch(self, [row] if row["dispatched_at"] is not None else [])
        interrupt = tuple(live) if multitask == "interrupt" else ()
        return Created(run_json(row), dispatch, interrupt, user_id)

    async def _create_run(self, c: _Creation, ended: list[str] | None = None
                          ) -> tuple[str, asyncpg.Record, list[str]]:
        """``app.create_run``'s one row: its outcome, the run, the thread's live runs."""
        rows = await self.pool.fetch(
            _CREATE_RUN, c.thread_id, c.user_id, c.text, c.run_id, c.message_id, c.agent,
            self._max_active, self._window, self._max_waiting, c.multitask, ended)
        return rows[0]["outcome"], rows[0]["run"], rows[0]["runs"]

    async def _create_batch(self, batch: list[_Creation]
                            ) -> list[tuple[str, asyncpg.Record, list[str]] | BaseException]:
        """The creations of concurrent requests in one statement; should it fail, each
        alone (a request's bad value then fails that request only). A creation
        alone goes the same way: ``app.create_runs`` answers another user's thread
        without its lock, where ``app.create_run`` locks a thread before it knows
        whose it is."""
        rows = await self._together(
            _CREATE_RUNS, [(c.thread_id, c.user_id, c.text, c.run_id, c.message_id, c.agent,
                            c.multitask) for c in batch],
            self._max_active, self._window, self._max_waiting)
        if rows is None:
            return await _one_by_one(self._create_run, batch)
        return [(r["outcome"], r["run"], r["runs"]) for r in rows]

    async def _check_history_quota(self, user_id: str) -> None:
        """429 ``quota_exceeded`` while the user's runs have written more history
        this hour than the quota (read before any lock is taken)."""
        if self._history_bytes is None:
            return
        # concurrent creations share their round trips
        hour, written = await self._queue.execute("HMGET", UserKeys(user_id).meta, "ww", "wb")
        now = time.time()
        if hour is not None and int(hour) == history_hour(now) \
                and int(written or 0) >= self._history_bytes:
            raise ProblemError(
                429, "quota_exceeded",
                f"your runs wrote over {self._history_bytes} bytes of events this hour",
                {"Retry-After": str(max(1, 3600 - int(now) % 3600))})

    async def after_create(self, created: Created) -> None:
        """What follows a creation's commit: the interrupted runs' cancellations,
        then the new run's queue entry."""
        for run_id in created.interrupt:
            await self.stop(created.user_id, run_id, "interrupt")
        await created.dispatch.send()

    async def stop(self, user_id: str, run_id: str, by: StoppedBy, *,
                   thread_id: str | None = None, agent: str | None = None) -> None:
        """Ask the run's worker to stop it; a run waiting for a tool approval has no
        worker, and is ended here (``thread_id``, ``agent``: the run's, when its
        record is gone with its thread)."""
        await request_cancel(self._redis, run_id, by=by)
        if self._approvals is not None:
            await self._approvals.stop(user_id, run_id, by, thread_id=thread_id, agent=agent)

    # -- start and finish (the lifecycle stream) --------------------------------------
    async def start(self, started: Sequence[tuple[str, datetime]]) -> Dispatch:
        """Mark runs running; their users' freed queue places go to waiting runs, in
        the same statement."""
        if not started:
            return Dispatch(self)
        return Dispatch(self, await self.pool.fetch(
            _START_RUNS, [run_id for run_id, _ in started], [ts for _, ts in started],
            self._window))

    async def top_up(self, users: Iterable[str]) -> Dispatch:
        """Dispatch what may go now of these users' waiting runs (after their runs
        started, or their thread was deleted)."""
        users = list(users)
        if not users:
            return Dispatch(self)
        return Dispatch(self, await self.pool.fetch(_TOP_UP_USERS, users, self._window))

    async def finish(self, run_id: str, event_type: str, payload: dict[str, Any],
                     ts: datetime) -> Finished:
        """End the run's record with its answer and its analytics row (the outbox);
        when the user has runs waiting, the thread's next one and those the window
        lets go are dispatched in the same transaction."""
        return await self._finish_one(Ending(run_id, event_type, payload, ts))

    async def finish_all(self, endings: Sequence[Ending]) -> list[Finished]:
        """:meth:`finish` for each ending, in one transaction; should it fail, each
        in its own, all at once (an ending that cannot apply fails alone)."""
        rows = await self._together(
            _FINISH_RUNS, [e.arguments(new_id("msg")) for e in endings], self._window)
        if rows is not None:
            by_ending: list[list[asyncpg.Record]] = [[] for _ in endings]
            for row in rows:
                by_ending[row["idx"] - 1].append(row)
            return [self._finished(each) for each in by_ending]
        finished: list[Finished] = []
        for outcome in await _one_by_one(self._finish_one, endings):
            if isinstance(outcome, BaseException):
                raise outcome
            finished.append(outcome)
        return finished

    async def _together(self, sql: str, requests: Sequence[tuple[Any, ...]], *shared: Any
                        ) -> list[asyncpg.Record] | None:
        """One statement for the requests, however many (each argument an array of
        theirs, then the shared ones); its rows in the requests' order (``idx`` from
        1). None when the statement failed (logged): then the caller applies each
        alone."""
        if not requests:
            return []
        try:
            rows = await self.pool.fetch(
                sql, *(list(column) for column in zip(*requests, strict=True)), *shared)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.info("%d requests together failed (%s); each alone", len(requests), exc)
            return None
        return sorted(rows, key=lambda row: row["idx"])

    async def _finish_one(self, ending: Ending) -> Finished:
        return self._finished(await self.pool.fetch(
            _FINISH_RUN, *ending.arguments(new_id("msg")), self._window))

    def _finished(self, rows: list[asyncpg.Record]) -> Finished:
        finished = [r["run"] for r in rows if r["kind"] == "finished"]
        row = finished[0] if finished else None
        return Finished(row, Dispatch(self, [r["run"] for r in rows
                                             if r["kind"] == "dispatched"]))

    async def flush_outbox(self, limit: int = 500) -> int:
        """Put finished runs' analytics rows on the ingest stream; each leaves the
        outbox only once it is there. Raises :class:`IngestBusy` (the stream is
        full) or a Redis error, the rows staying for the next flush."""
        async with self.pool.acquire() as conn, conn.transaction():
            taken = await conn.fetch(_OUTBOX_TAKE, limit)
            if taken:
                await append_rows(self._redis, "runs", [json.loads(r["row"]) for r in taken])
        return len(taken)

    # -- the queue --------------------------------------------------------------------
    async def append(self, rows: Iterable[asyncpg.Record], *, again: bool = False) -> None:
        """Append the runs' queue entries (each once, whoever else appends it), with
        their threads' memory, in shared round trips. ``again``: the safety net's
        call, for runs still queued long after their dispatch."""
        rows = list(rows)
        if not rows:
            return
        memory = await self._memory(rows)
        await asyncio.gather(*(self._append_one(row, memory.get(row["id"], "[]"), again)
                               for row in rows))

    async def _memory(self, rows: list[asyncpg.Record]) -> dict[str, str]:
        """Each run's memory: its thread's earlier answered runs within the budget
        (one statement for all the runs, and for those of concurrent callers)."""
        if self._memory_tokens <= 0:
            return {}
        return await self._turns.submit(rows)

    async def _turns_batch(self, batch: list[list[asyncpg.Record]]) -> list[dict[str, str]]:
        rows = [row for rows in batch for row in rows]
        try:
            earlier = await self.pool.fetch(
                _TURNS, [r["id"] for r in rows], [r["thread_id"] for r in rows],
                [r["created_at"] for r in rows], _MEMORY_TURNS)
        except (asyncpg.PostgresError, OSError) as exc:  # a run without memory still runs
            log.warning("thread memory not read: %s", exc)
            return [{} for _ in batch]
        newest_first: dict[str, list[Turn]] = {}
        for turn in sorted(earlier, key=lambda t: t["created_at"], reverse=True):
            newest_first.setdefault(turn["run_id"], []).append(
                Turn(input=turn["input"], answer=turn["result"], tools=turn["tools_note"] or "",
                     answer_tokens=turn["answer_tokens"] or 0))
        memory = {run_id: encode_memory(within_budget(turns, self._memory_tokens))
                  for run_id, turns in newest_first.items()}
        # each caller its own runs' memory only
        return [{r["id"]: memory[r["id"]] for r in rows if r["id"] in memory} for rows in batch]

    async def _append_one(self, row: asyncpg.Record, memory: str, again: bool) -> None:
        request = RunRequest(run_id=row["id"], user_id=row["user_id"],
                             thread_id=row["thread_id"], agent=row["agent"], input=row["input"],
                             memory=memory)
        fields = [part for pair in request.fields().items() for part in pair]
        run_key = UserKeys(request.user_id).run(request.run_id)
        try:
            if not self._cluster:
                await self._queue.script(self._append, [RUN_QUEUE, run_key],
                                         [self._ttl_s, *fields])
            else:
                await self._append_on_cluster(request, run_key, fields, again)
        except (RedisError, OSError) as exc:
            log.warning("run %s committed, its queue entry not yet appended: %s",
                        request.run_id, exc)

    async def _append_on_cluster(self, request: RunRequest, run_key: str, fields: list[str],
                                 again: bool) -> None:
        """The queue's shard and the run's hash are on different slots: append, then
        mark (a second entry of the run, should two appends race, is dropped by the
        worker that finds the run claimed: agents/worker.py). The safety net appends
        again an entry that is marked but gone from its shard: a failover can lose
        one and keep the other."""
        shard = self._shards.for_user(request.user_id)
        sent = await self._queue.execute("HGET", run_key, "q")
        if sent is not None and (not again
                                 or await self._queue.execute("XRANGE", shard, sent, sent)):
            return  # appended already (and, asked again, still on its shard)
        entry_id = await self._queue.execute("XADD", shard, "*", *fields)
        await asyncio.gather(self._queue.execute("HSET", run_key, "q", entry_id),
                             self._queue.execute("EXPIRE", run_key, self._ttl_s))

    async def resend_unsent(self, *, older_than_s: float = RESEND_AFTER_S,
                            limit: int = 1000) -> int:
        """The safety net of the queue, run now and then: appends the entries of
        dispatched runs still queued after ``older_than_s`` (a no-op for those
        appended already), and tops up users whose runs have waited as long (a
        trigger lost with a crash). Returns how many dispatches it looked at."""
        rows = await self.pool.fetch(_UNSENT, older_than_s, limit)
        await self.append(rows, again=True)
        waiting = await self.pool.fetch(_WAITING_LONG, older_than_s, limit)
        await (await self.top_up(r["user_id"] for r in waiting)).send()
        return len(rows)

    # -- read -------------------------------------------------------------------------
    async def read(self, user_id: str, run_id: str) -> dict[str, Any] | None:
        """The run as its user sees it. Its record never lags the events already
        sent: when the emit script stored a start or an end the lifecycle stream has
        not yet applied (milliseconds behind), the read applies it first, through
        the same transitions (applying twice changes nothing). A run waiting for a
        tool approval also shows the call (``pending_approval``)."""
        run = await self._store.run(user_id, run_id)
        if run is None or run["status"] not in ACTIVE:
            return run
        try:
            settled, pending = await self.settle(user_id, run_id)
            if settled:
                run = await self._store.run(user_id, run_id)
            if run is not None and run["status"] == "running" and pending is not None:
                run["pending_approval"] = pending  # a call waits for its user
        except (RedisError, OSError) as exc:  # the record stands, if behind
            log.warning("run %s read without its live state: %s", run_id, exc)
        return run

    async def settle_thread(self, user_id: str, thread_id: str) -> None:
        """Apply what the thread's active runs' events said and their records do not
        yet (before the thread's messages are read: a run's answer is there once its
        terminal event is out)."""
        active = [r["id"] for r in await self.pool.fetch(
            "SELECT id FROM app.runs WHERE thread_id = $1 AND user_id = $2 "
            "AND status = ANY($3::text[])", thread_id, user_id, list(ACTIVE))]
        try:
            for run_id in await self._registry.ended(user_id, active):
                await self.settle(user_id, run_id)  # (an ended run waits for nothing)
        except (RedisError, OSError) as exc:  # the messages stand, if behind
            log.warning("thread %s read without its runs' live state: %s", thread_id, exc)

    async def settle(self, user_id: str, run_id: str
                      ) -> tuple[bool, dict[str, Any] | None]:
        """Apply the run's stored start or end (its Redis hash: ``st``; ``end``,
        ``et``, ``ep``) to its record; whether there was one, and the call the run
        waits for its user to answer, read in the same round trip."""
        *raw, asked, answer = await self._redis.hmget(
            UserKeys(user_id).run(run_id), "st", "end", "et", "ep", *PENDING_FIELDS)
        pending = pending_call(asked, answer)
        started, end, ended, end_payload = (v.decode() if isinstance(v, bytes) else v
                                            for v in raw)
        if end and ended:
            finished = await self.finish(run_id, end, json.loads(end_payload or "{}"),
                                         parse_timestamp(ended))
            await finished.dispatch.send()
            try:
                await self.flush_outbox()
            except (IngestBusy, RedisError, OSError) as exc:  # the next flush takes it
                log.warning("analytics rows wait in the outbox: %s", exc)
            return True, pending
        if started:
            await (await self.start([(run_id, parse_timestamp(started))])).send()
            return True, pending
        return False, pending

    # -- cancel -----------------------------------------------------------------------
    async def cancel(self, user_id: str, run_id: str) -> None:
        """Stop ``run_id``: it ends with ``agent_cancelled``."""
        status = await self.pool.fetchval(
            "SELECT status FROM app.runs WHERE id = $1 AND user_id = $2", run_id, user_id)
        if status is None:
            raise ProblemError(404, "not_found", "no such run")
        if status not in ACTIVE:
            raise ProblemError(409, "run_finished", f"the run already ended ({status})")
        await self.stop(user_id, run_id, "user")


async def _one_by_one(call: Callable[[T], Awaitable[R]], items: Sequence[T]
                      ) -> list[R | BaseException]:
    """``call`` on each item at once (each on its own connection); each its answer
    or its exception."""
    return await asyncio.gather(*(call(item) for item in items), return_exceptions=True)


def _count(value: Any) -> int | None:
    """A token count from a lifecycle entry, or None (absent or not a count)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31:
        return value
    return None
