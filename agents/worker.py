"""``python -m agents.worker``: take runs from the queue and execute them.

Runs come from the ``runs:queue`` stream through the ``workers`` consumer group,
so each run goes to one worker. Up to ``concurrency`` runs execute at once, each
as its own task with its own :class:`RunContext`. The worker reads its free slots'
worth of entries and starts them round-robin over users (:class:`FairShare`), one
user holding at most ``max_user_share`` of its slots while another user's runs
wait: when the next start would go past that share, it first looks up to
``read_ahead`` entries further, and puts what it read and did not start back at
the end of the queue. A worker holds no entry it does not execute; a crashed
worker's unstarted entries are re-taken by the others after ``claim_idle_s``. On
SIGTERM it lets running runs finish within the grace period, then ends the rest
with ``agent_failed`` (cause ``worker_lost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
from dataclasses import asdict, replace
from pathlib import Path
from typing import NamedTuple

import uvloop
from redis.asyncio import Redis
from redis.exceptions import RedisError

from agents.backend_client import BackendClient
from agents.builtin import builtin_agents
from agents.config import WorkerSettings
from agents.context import RunContext, Services, StopReason
from agents.fairshare import FairShare
from agents.pause import decode
from agents.runtime import Agent, Resumed, Runtime
from agents.usage import ModelPrices, usage_rows
from bridge.approvals import Approvals
from bridge.cancel import parse_cancel_message, parse_stop
from bridge.emitter import EventEmitter, RunEmitter
from bridge.errors import EmitError, RunFinished
from bridge.events import failed
from bridge.groups import ShardEntry, autoclaim, ensure_group, read_shards, requeue
from bridge.ingest import CHUNK, append_command, append_retrying
from bridge.leases import RunLeases
from bridge.memory import decode_memory
from bridge.queue import RunRequest
from servicekit.autopipeline import AutoPipeline
from servicekit.heap import settle_heap
from servicekit.logs import configure_logging
from servicekit.redisclient import is_cluster, make_redis
from servicekit.rediskeys import (
    AGENTS_CATALOG,
    CANCEL_CHANNEL,
    INGEST_STREAM,
    RUN_QUEUE,
    WORKER_GROUP,
    StreamShards,
    UserKeys,
    cancel_key,
    worker_alive_key,
)
from servicekit.settings import load_settings
from servicekit.startup import retry_until
from servicekit.tasks import cancel_and_wait

__all__ = ["QueueEntry", "Worker", "main"]

log = logging.getLogger(__name__)


#: after a look past a user at the share found nobody else, no look for this long
LOOK_QUIET_S = 1.0


# KEYS[1] the run's hash; ARGV[1] a queue entry: the run's claim, taken by the first
# entry started (its hash exists: the dispatch marked it); returns the holder
_CLAIM_LUA = """
redis.call('HSETNX', KEYS[1], 'w', ARGV[1])
return redis.call('HGET', KEYS[1], 'w')
"""


class QueueEntry(NamedTuple):
    """A run's entry: the queue shard it is on and its id there."""

    stream: str
    id: bytes


class Worker:
    def __init__(self, settings: WorkerSettings, redis: Redis, agents: dict[str, Agent],
                 services: Services | None = None) -> None:
        self._settings = settings
        self._redis = redis
        self._redis_cluster = is_cluster(redis)
        self._queue = StreamShards.of(RUN_QUEUE, cluster=self._redis_cluster)
        self._next_shard = 0  # the shard a read looks at first, in turn
        self._ingest = StreamShards.of(INGEST_STREAM, cluster=self._redis_cluster)
        self._claim = redis.register_script(_CLAIM_LUA)
        self._agents = agents
        # what the heartbeat announces: built once (the tools' JSON schemas cost
        # about 3 % of a busy worker's CPU when rebuilt at every beat)
        self._catalog = {name: json.dumps(agent.describe()) for name, agent in agents.items()}
        self._approvals = Approvals(redis, hash_ttl_s=settings.history_ttl_s)
        self._services = replace(services or Services(), approvals=self._approvals)
        self._emitter = EventEmitter(redis, history_maxlen=settings.history_maxlen,
                                     history_ttl_s=settings.history_ttl_s,
                                     history_max_bytes=settings.history_max_bytes,
                                     event_max_bytes=settings.event_max_bytes,
                                     emit_timeout_s=settings.emit_timeout_s)
        self._leases = RunLeases(redis, lease_ttl_s=settings.lease_ttl_s)
        self._auto = AutoPipeline(redis)  # the runs' own commands share round trips
        self._prices = ModelPrices(settings.own_prices())  # of the agents' model calls
        self._runtime = Runtime(max_steps=settings.max_steps,
                                max_answer_chars=settings.max_answer_chars,
                                approval_timeout_s=settings.approval_timeout_s,
                                tool_timeout_s=settings.tool_timeout_s)
        self._running: dict[str, tuple[RunContext, asyncio.Task[None]]] = {}
        self._per_user: dict[str, int] = {}  # running runs per user
        # the entries of one read, until started or put back (never held longer)
        self._choice: FairShare[tuple[QueueEntry, RunRequest]] = FairShare(
            concurrency=settings.concurrency, max_user_share=settings.max_user_share,
            enabled=settings.fair_share)
        self._look_quiet_until = 0.0
        self._freed = asyncio.Event()  # a slot freed
        self._stopping = asyncio.Event()
        self.completed = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await retry_until(self._prepare, what="joining the run queue", timeout=60.0)
        helpers = [asyncio.create_task(self._listen_for_cancels(), name="cancel-listener"),
                   asyncio.create_task(self._heartbeat(), name="heartbeat")]
        try:
            await self._consume()
        finally:
            await self._drain()
            await cancel_and_wait(*helpers)
            _health_file(self._settings.health_file, alive=False)
            with contextlib.suppress(RedisError, OSError):
                await self._redis.delete(worker_alive_key(self._settings.worker_id))

    async def _announce(self) -> None:
        # a copy typed as redis-py's mapping (its key type is a wider union than str)
        await self._redis.hset(AGENTS_CATALOG, mapping={k: v for k, v in self._catalog.items()})

    async def _heartbeat(self) -> None:
        """Renews the leases of running runs and ``worker:alive:<id>`` (its readiness),
        and stops runs whose cancellation the channel did not bring."""
        while True:
            with contextlib.suppress(RedisError, OSError):
                await self._leases.hold(list(self._running), self._settings.worker_id)
                await self._redis.set(worker_alive_key(self._settings.worker_id),
                                      len(self._running), ex=10)
                _health_file(self._settings.health_file, alive=True)
                await self._announce()
                await self._honour_cancel_keys()
            await asyncio.sleep(self._settings.lease_ttl_s / 4)

    async def _honour_cancel_keys(self) -> None:
        """The safety net under the cancel channel: a message lost while the pub/sub
        link reconnected still stops its run, one heartbeat later."""
        run_ids = list(self._running)
        if not run_ids:
            return
        # one GET each (the keys are on different slots of a Redis Cluster), in one
        # round trip
        async with self._redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.get(cancel_key(run_id))
            requests = await pipe.execute()
        for run_id, by in zip(run_ids, requests, strict=True):
            if by is not None:
                self.cancel(run_id, parse_stop(by))

    async def _prepare(self) -> None:
        for stream in self._queue.keys:
            await ensure_group(self._redis, stream, WORKER_GROUP)
        await self._announce()
        log.info("worker %s taking runs (concurrency %d, fair share %s, at most %d per "
                 "user while others wait)", self._settings.worker_id,
                 self._settings.concurrency, "on" if self._settings.fair_share else "off",
                 self._choice.cap)

    async def _consume(self) -> None:
        backoff = 0.1
        next_claim = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            self._freed.clear()  # before counting: a slot freed from here on wakes us
            free = self._settings.concurrency - len(self._running)
            if free <= 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), timeout=0.5)
                continue
            try:
                if loop.time() >= next_claim:
                    next_claim = loop.time() + 5.0
                    await self._claim_stale()
                if not len(self._choice):
                    await self._read(free, block_ms=500)
                await self._start_chosen(free)
                backoff = 0.1
            except (RedisError, OSError) as exc:
                log.warning("queue unavailable: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                if "NOGROUP" in str(exc):  # Redis came back empty
                    with contextlib.suppress(RedisError, OSError):
                        await self._prepare()
                continue
            await self._requeue(self._choice.drain())

    async def _read(self, count: int, *, block_ms: int | None) -> int:
        """Read up to ``count`` new queue entries into the choice; how many came."""
        if count <= 0:
            return 0
        shards = self._queue.keys
        self._next_shard = (self._next_shard + 1) % len(shards)
        entries = await read_shards(self._redis, shards, WORKER_GROUP, self._settings.worker_id,
                                    count=count, block_ms=block_ms, first=self._next_shard)
        for entry in entries:
            self._offer(QueueEntry(entry.stream, entry.id), RunRequest.from_fields(entry.fields))
        return len(entries)

    def _over_share(self) -> bool:
        """Whether the fair choice would give a free slot to a user at the share."""
        return bool(self._settings.fair_share and self._settings.read_ahead
                    and self._choice.only_capped(self._per_user))

    def _offer(self, entry_id: QueueEntry, request: RunRequest) -> None:
        self._choice.add(request.user_id, (entry_id, request))

    async def _start_chosen(self, free: int) -> None:
        """Start what was read in the free slots, in the fair share's order. When the
        next start would go to a user at the share, first look past the head of the
        queue once for another user's run (not again for a while if none is there)."""
        loop = asyncio.get_running_loop()
        looked = False
        for _ in range(free):
            if not looked and self._over_share() and loop.time() >= self._look_quiet_until:
                looked = True
                await self._read(self._settings.read_ahead, block_ms=None)
                if self._over_share():  # nobody else waits
                    self._look_quiet_until = loop.time() + LOOK_QUIET_S
            chosen = self._choice.next_to_start(self._per_user)
            if chosen is None:
                return
            self._start(*chosen)

    async def _requeue(self, left: list[tuple[QueueEntry, RunRequest]]) -> None:
        """What was read and not started goes back to the end of its queue shard, for
        any worker: a worker holds no run it is not executing."""
        by_shard: dict[str, list[bytes]] = {}
        for entry, _ in left:
            by_shard.setdefault(entry.stream, []).append(entry.id)
        for stream, ids in by_shard.items():
            try:
                await retry_until(functools.partial(requeue, self._redis, stream, WORKER_GROUP,
                                                    ids),
                                  what="putting unstarted runs back in the queue", timeout=10.0)
            except (RedisError, OSError) as exc:  # pending still: claimed back when idle
                log.warning("%d unstarted runs not put back yet: %s", len(ids), exc)

    async def _claim_stale(self) -> None:
        """Take queue entries that a vanished worker read but never started."""
        entries = [ShardEntry(stream, entry_id, fields) for stream in self._queue.keys
                   for entry_id, fields in await autoclaim(
                       self._redis, stream, WORKER_GROUP, self._settings.worker_id,
                       min_idle_ms=int(self._settings.claim_idle_s * 1000), count=50)]
        for stream, raw_id, fields in entries:
            entry_id = QueueEntry(stream, raw_id)
            request = RunRequest.from_fields(fields)
            run_key = UserKeys(request.user_id).run(request.run_id)
            # a resume entry's run started again once its paused state was taken
            started = (not await self._redis.hexists(run_key, "wa") if request.resume
                       else await self._redis.hexists(run_key, "n"))
            if started or request.run_id in self._running:
                # started elsewhere: it finishes there, or is declared lost by the backend
                for command in _done_commands(entry_id):
                    await self._redis.execute_command(*command)
                continue
            log.info("taking over run %s, never started by its first worker", request.run_id)
            self._offer(entry_id, request)

    def _start(self, entry_id: QueueEntry, request: RunRequest) -> None:
        agent = self._agents.get(request.agent)
        emitter = RunEmitter(self._emitter, user_id=request.user_id, run_id=request.run_id,
                             thread_id=request.thread_id, agent=request.agent)
        ctx = RunContext(run_id=request.run_id, user_id=request.user_id,
                         thread_id=request.thread_id, agent=request.agent, input=request.input,
                         memory=decode_memory(request.memory),
                         emitter=emitter, services=self._services,
                         deadline=asyncio.get_running_loop().time() + self._settings.run_timeout_s)
        task = asyncio.create_task(self._execute(entry_id, ctx, agent, bool(request.resume)),
                                   name=request.run_id)
        self._running[request.run_id] = (ctx, task)
        self._per_user[request.user_id] = self._per_user.get(request.user_id, 0) + 1

    async def _execute(self, entry_id: QueueEntry, ctx: RunContext, agent: Agent | None,
                       resume: bool = False) -> None:
        try:
            # the lease, and a stop requested before the run was taken: one round trip
            # shared with the other runs starting now
            first = [self._auto.execute(*self._leases.hold_command(ctx.run_id,
                                                                    self._settings.worker_id)),
                     self._auto.execute("GET", cancel_key(ctx.run_id))]
            if self._redis_cluster and not resume:
                first.append(self._claimed(entry_id, ctx))
            _, requested, *claimed = await asyncio.gather(*first)
            resumed = await self._resumed(ctx) if resume else None
            if not all(claimed) or (resume and resumed is None):  # taken by another worker
                for command in _done_commands(entry_id):
                    await self._auto.execute(*command)
                return
            if requested is not None and ctx.stop_reason is None:
                ctx.stop_reason = parse_stop(requested)
            if ctx.stop_reason is not None:  # stopped before the runtime began
                await self._runtime.end_stopped(ctx)
            elif agent is None:  # (a resumed run started already, on another worker)
                if not ctx.emitter.started:
                    await ctx.emitter.emit("agent_started", {"input": ctx.input})
                await ctx.emitter.emit("agent_failed", failed(
                    "unknown_agent", f"no agent {ctx.agent!r}", "error"))
            else:
                # from here a stop request cancels this task and the runtime ends the
                # run; before, it is only recorded (a task cancelled before its first
                # step would end without a single event) and checked just above
                ctx.cancellable = True
                await self._runtime.run(ctx, agent, resumed)
            await self._finish(entry_id, ctx)
        except RunFinished:
            log.warning("run %s was ended elsewhere (declared lost?); stopping it", ctx.run_id)
            await self._finish(entry_id, ctx)
        except EmitError as exc:
            log.error("run %s cannot deliver its events: %s", ctx.run_id, exc)
            await self._fail_undeliverable(entry_id, ctx)
        except Exception:
            log.exception("run %s could not be completed", ctx.run_id)
        finally:
            self._running.pop(ctx.run_id, None)
            left = self._per_user.pop(ctx.user_id, 0) - 1
            if left > 0:
                self._per_user[ctx.user_id] = left
            self._freed.set()

    async def _claimed(self, entry_id: QueueEntry, ctx: RunContext) -> bool:
        """Whether this entry is the run's: on a Redis Cluster the dispatch's append
        and its mark are two steps, and two racing appends could queue a run twice;
        the first entry started claims the run (the same entry, taken over from a
        vanished worker, still holds it). One Redis appends once, atomically, and a
        resume entry's run is taken once (bridge/approvals.py)."""
        claim = f"{entry_id.stream} {entry_id.id.decode()}"
        holder = await self._auto.script(self._claim, [UserKeys(ctx.user_id).run(ctx.run_id)],
                                         [claim])
        return bool(holder == claim.encode() or holder == claim)

    async def _resumed(self, ctx: RunContext) -> Resumed | None:
        """Take back a run paused for a tool approval, with its user's answer: its
        emitter goes on from its stored events, its deadline from the time it had run."""
        taken = await self._approvals.take(ctx.user_id, ctx.run_id)
        if taken is None:
            return None
        paused = decode(taken.state)
        ctx.emitter.resume(events=taken.events, pending=(paused.call_id, paused.call.tool))
        ctx.deadline = (asyncio.get_running_loop().time() + self._settings.run_timeout_s
                        - paused.elapsed_s)
        log.info("resuming run %s, its call %s %s", ctx.run_id, paused.call_id,
                 "approved" if taken.approved else "rejected")
        return Resumed(paused, taken.approved)

    async def _finish(self, entry_id: QueueEntry, ctx: RunContext) -> None:
        """Release the lease, acknowledge and delete the queue entry (the queue keeps
        only runs not yet done) and record the tool calls and the model calls (usage
        rows of the run's user, marked as the agents'), in one round trip shared with
        the other runs ending now."""
        tables = {
            "tool_calls": [{**asdict(record), "run_id": ctx.run_id, "user_id": ctx.user_id}
                           for record in ctx.tool_records],
            "usage": usage_rows(ctx.user_id, list(ctx.model_calls), self._prices)}
        done = [self._leases.release_command(ctx.run_id), *_done_commands(entry_id)]
        appends = [append_command(table, rows[start:start + CHUNK],
                                  maxlen=self._settings.ingest_maxlen, stream=self._ingest.any())
                   for table, rows in tables.items() for start in range(0, len(rows), CHUNK)]
        # the ingest stream answers 0 while full: the rows retry with backoff
        outcomes = await asyncio.gather(
            *(self._auto.execute(*command) for command in done),
            *(append_retrying(self._auto.execute, command) for command in appends),
            return_exceptions=True)
        for error in (o for o in outcomes[len(done):] if isinstance(o, BaseException)):
            log.warning("metrics of run %s not recorded: %s", ctx.run_id, error)
        self.completed += 1

    async def _fail_undeliverable(self, entry_id: QueueEntry, ctx: RunContext) -> None:
        """Keep trying to end the run with a clear error while Redis is away."""
        for _ in range(6):
            try:
                if not ctx.emitter.started:
                    await ctx.emitter.emit("agent_started", {"input": ctx.input})
                await ctx.emitter.emit("agent_failed", failed(
                    "event_delivery_failed",
                    "the run's events could not be stored; it was stopped", "error"))
            except RunFinished:
                pass
            except EmitError:
                continue
            await self._finish(entry_id, ctx)
            return
        log.error("run %s left without a terminal event; its lease lapses and the backend "
                  "declares it lost", ctx.run_id)

    def cancel(self, run_id: str, reason: StopReason) -> bool:
        entry = self._running.get(run_id)
        if entry is None:
            return False
        ctx, task = entry
        if ctx.stop_reason is None:
            ctx.stop_reason = reason
        # again on every request until the runtime handles it: a cancellation can be
        # swallowed on its way (asyncio.wait_for in Python 3.11 loses one that races
        # with its inner result), and the heartbeat repeats the request
        if ctx.cancellable and not ctx.stopping and not task.done():
            task.cancel()
        return True

    async def _listen_for_cancels(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(CANCEL_CHANNEL)
                while True:
                    # a bounded wait, so an idle link never runs into the socket timeout
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=1.0)
                    if message is None or message["type"] != "message":
                        continue
                    self.cancel(*parse_cancel_message(message["data"]))
            except (RedisError, OSError) as exc:
                log.warning("cancel channel lost: %s", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def _drain(self) -> None:
        tasks = [task for _, task in self._running.values()]
        if not tasks:
            return
        log.info("waiting up to %.0fs for %d running runs", self._settings.shutdown_grace_s,
                 len(tasks))
        _, pending = await asyncio.wait(tasks, timeout=self._settings.shutdown_grace_s)
        for task in pending:
            self.cancel(task.get_name(), "worker_lost")
        if pending:
            await asyncio.wait(pending, timeout=5.0)



def _done_commands(entry_id: QueueEntry) -> list[tuple[str | bytes, ...]]:
    """A queue entry whose run is done: acknowledged, then deleted."""
    return [("XACK", entry_id.stream, WORKER_GROUP, entry_id.id),
            ("XDEL", entry_id.stream, entry_id.id)]


async def serve(settings: WorkerSettings) -> None:
    redis = make_redis(settings.redis_url, timeout=5.0, max_connections=settings.concurrency + 8,
                       cluster=settings.redis_cluster)
    token = settings.backend_token.get_secret_value() if settings.backend_token else None
    backend = BackendClient(settings.backend_url, token, timeout_s=settings.tool_timeout_s)
    agents = builtin_agents(settings)
    worker = Worker(settings, redis, agents, Services(backend=backend))
    settle_heap()  # the process's, not a Worker's (tests run Workers inside pytest's)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        await backend.aclose()
        for planner in {id(a.planner): a.planner for a in agents.values()}.values():
            closing = getattr(planner, "aclose", None)
            if closing is not None:
                await closing()
        await redis.aclose()
        log.info("worker %s stopped", settings.worker_id)


def _health_file(path: str | None, *, alive: bool) -> None:
    """Touch (or remove) the healthcheck's file: on a tmpfs, microseconds."""
    if path is None:
        return
    if alive:
        Path(path).touch()
    else:
        Path(path).unlink(missing_ok=True)


def main() -> None:
    settings = load_settings(WorkerSettings)
    configure_logging(settings.worker_id, settings.log_level)
    uvloop.run(serve(settings))  # the event loop uvicorn runs the other services on


if __name__ == "__main__":
    main()
