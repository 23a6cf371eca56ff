"""Tool approvals: a run paused on a call waits in Redis, not in a worker.

A worker *parks* the run (its paused state, the call and its deadline go into the
run's hash), emits ``approval_required`` and frees its slot. The first *answer*
wins, atomically: the user's approve or reject appends a resume entry to the run
queue in the same script (any worker takes it and *takes* the paused state back);
a stop (the user's cancel, an interrupt, the deadline passing) appends nothing,
and whoever claimed it emits the run's ``agent_cancelled``. Hash fields (see
:meth:`servicekit.rediskeys.UserKeys.run`): ``wc`` the waiting call, ``wx`` its
deadline (epoch ms), ``ws`` the paused state, ``wp`` the ``approval_required``
payload, ``wa`` the answer.

On a Redis Cluster the queue's shard is on another slot than the run's hash: the
script records the answer, and the resume entry is appended just after it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from bridge.events import StoppedBy
from bridge.queue import RunRequest
from servicekit.redisclient import is_cluster
from servicekit.rediskeys import RUN_QUEUE, StreamShards, UserKeys

__all__ = ["APPROVE", "PENDING_FIELDS", "REJECT", "Answered", "Approvals", "Taken", "Waiting",
           "pending_call", "stop_answer"]

#: the run's hash fields that tell the call waiting for an answer (:func:`pending_call`)
PENDING_FIELDS = ("wp", "wa")
APPROVE = "approve"
REJECT = "reject"
_STOP = "stop:"

# KEYS[1] the run's hash, KEYS[2] the run queue (absent on a Redis Cluster: the
# caller appends the entry); ARGV[1] the call ('' any call),
# ARGV[2] the answer, ARGV[3] now (epoch ms), ARGV[4] the hash's ttl, then the resume
# entry's fields (none: a stop, which appends nothing and may come after the deadline)
_ANSWER_LUA = """
if redis.call('HGET', KEYS[1], 'done') == '1' then return 'ended' end
local waiting = redis.call('HGET', KEYS[1], 'wc')
if not waiting or (ARGV[1] ~= '' and waiting ~= ARGV[1]) then return 'not_waiting' end
if redis.call('HEXISTS', KEYS[1], 'wa') == 1 then return 'answered' end
local resume = #ARGV > 4
if resume and tonumber(redis.call('HGET', KEYS[1], 'wx') or '0') <= tonumber(ARGV[3]) then
  return 'expired'
end
redis.call('HSET', KEYS[1], 'wa', ARGV[2])
if resume and KEYS[2] then
  redis.call('HSET', KEYS[1], 'q', redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5)))
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 'ok'
"""

# KEYS[1] the run's hash: the paused state, its answer and the run's event count,
# once; the run waits no more
_TAKE_LUA = """
local answer = redis.call('HGET', KEYS[1], 'wa')
if answer ~= 'approve' and answer ~= 'reject' then return false end
local state = redis.call('HGET', KEYS[1], 'ws')
local numbers = redis.call('HGET', KEYS[1], 'n') or '0'
redis.call('HDEL', KEYS[1], 'wc', 'wx', 'ws', 'wa', 'wp')
return {state, answer, numbers}
"""


class Answered(StrEnum):
    """What became of an answer."""

    OK = "ok"
    NOT_WAITING = "not_waiting"  # no such call waits (never, or resumed already)
    ANSWERED = "answered"  # another answer came first
    EXPIRED = "expired"  # its deadline passed
    ENDED = "ended"  # the run ended


_STOPPED_BY: dict[str, StoppedBy] = {"user": "user", "interrupt": "interrupt",
                                     "approval_timeout": "approval_timeout"}


def stop_answer(by: StoppedBy) -> str:
    return _STOP + by


@dataclass(frozen=True, slots=True)
class Taken:
    """A paused run as a worker takes it back: its state, the answer, and how many
    events it has (its next event's number follows)."""

    state: str
    approved: bool
    events: int


@dataclass(frozen=True, slots=True)
class Waiting:
    """A run that waits for an answer (or whose stop was claimed)."""

    call_id: str
    expires_ms: int
    answer: str | None

    @property
    def stopped_by(self) -> StoppedBy | None:
        """Who claimed the run's stop, when one did (its ``agent_cancelled`` is due)."""
        if self.answer is None or not self.answer.startswith(_STOP):
            return None
        return _STOPPED_BY.get(self.answer[len(_STOP):], "user")


class Approvals:
    """The Redis side of tool approvals; one per process, holding no run's state."""

    def __init__(self, redis: Redis, *, hash_ttl_s: int = 86_400) -> None:
        self._redis = redis
        self._ttl_s = hash_ttl_s
        self._answer = redis.register_script(_ANSWER_LUA)
        self._take = redis.register_script(_TAKE_LUA)
        self._cluster = is_cluster(redis)
        self._queue = StreamShards.of(RUN_QUEUE, cluster=self._cluster)

    async def park(self, user_id: str, run_id: str, *, call_id: str, expires_ms: int,
                   state: str, asked: dict[str, Any]) -> None:
        """Store the paused run; it waits for an answer from now on. ``asked``: the
        ``approval_required`` payload, which the run's record shows meanwhile."""
        key = UserKeys(user_id).run(run_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(key, "wa")
            pipe.hset(key, mapping={"wc": call_id, "wx": expires_ms, "ws": state,
                                    "wp": json.dumps(asked, default=str)})
            pipe.expire(key, self._ttl_s)
            await pipe.execute()

    async def answer(self, request: RunRequest, call_id: str, *, approve: bool,
                     now_ms: int) -> Answered:
        """The user's answer to ``call_id``; when it wins, the run's resume entry is
        on the queue."""
        entry = RunRequest(**{**request.fields(), "resume": "1"}).fields()
        fields = [part for pair in entry.items() for part in pair]
        run_key = UserKeys(request.user_id).run(request.run_id)
        outcome = Answered(_text(await self._answer(
            keys=self._keys(run_key), args=[call_id, APPROVE if approve else REJECT, now_ms,
                                            self._ttl_s, *fields])))
        if self._cluster and outcome is Answered.OK:
            entry_id = await self._redis.xadd(self._queue.for_user(request.user_id), entry)
            await self._redis.hset(run_key, "q", entry_id)
        return outcome

    def _keys(self, run_key: str) -> list[str]:
        return [run_key] if self._cluster else [run_key, self._queue.name]

    async def stop(self, user_id: str, run_id: str, by: StoppedBy, *, now_ms: int) -> Answered:
        """Claim a waiting run's stop; ``OK``: the caller emits its ``agent_cancelled``."""
        outcome = await self._answer(keys=self._keys(UserKeys(user_id).run(run_id)),
                                     args=["", stop_answer(by), now_ms, self._ttl_s])
        return Answered(_text(outcome))

    async def take(self, user_id: str, run_id: str) -> Taken | None:
        """The paused run with its approve or reject answer, once (None: nothing to
        resume: taken already, or stopped)."""
        reply = await self._take(keys=[UserKeys(user_id).run(run_id)])
        if not reply:
            return None
        state, answer, events = (_text(part) for part in reply)
        return Taken(state=state, approved=answer == APPROVE, events=int(events))

    async def pending(self, user_id: str, run_id: str) -> dict[str, Any] | None:
        """The call the run waits for an answer to (its ``approval_required``
        payload), or None."""
        return pending_call(*await self._redis.hmget(UserKeys(user_id).run(run_id),
                                                     *PENDING_FIELDS))

    async def waiting(self, runs: Sequence[tuple[str, str]]) -> dict[str, Waiting]:
        """Which of these runs (user id, run id) wait for an answer, by run id."""
        if not runs:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, run_id in runs:
                pipe.hmget(UserKeys(user_id).run(run_id), "wc", "wx", "wa")
            replies = await pipe.execute()
        found = {}
        for (_, run_id), (call, expires, answer) in zip(runs, replies, strict=True):
            if call is not None:
                found[run_id] = Waiting(call_id=_text(call), expires_ms=int(expires or 0),
                                        answer=None if answer is None else _text(answer))
        return found


def pending_call(asked: bytes | str | None, answer: bytes | str | None
                 ) -> dict[str, Any] | None:
    """The waiting call from the run's hash fields :data:`PENDING_FIELDS` (read with
    the run's other live state): its ``approval_required`` payload while unanswered."""
    if asked is None or answer is not None:
        return None
    found: dict[str, Any] = json.loads(asked)
    return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
