"""The emit script and history reads, against a real redis-server."""

import asyncio
import json
from typing import Any

import pytest
from redis.asyncio import Redis

from bridge.batch import seq_of_line
from bridge.emitter import EventEmitter, RunEmitter
from bridge.errors import EmitError, InvariantError, RunFinished
from bridge.fanout import EventSink, Subscription, UserEventHub
from bridge.streams import UserStreams
from e2e.stack import LocalStack
from servicekit.rediskeys import LIFECYCLE_STREAM, UserKeys


async def _emit(emitter: EventEmitter, user: str, run: str, kind: str = "agent_thinking"
                ) -> dict[str, Any]:
    return await emitter.emit(user_id=user, run_id=run, thread_id="thr_1", agent="a",
                              type=kind, payload={"text": "t", "step": 1})  # type: ignore[arg-type]


async def test_seq_is_per_user_and_contiguous(redis: Redis) -> None:
    emitter = EventEmitter(redis)
    seqs_a = [(await _emit(emitter, "usr_a", f"run_{i}"))["seq"] for i in range(5)]
    seqs_b = [(await _emit(emitter, "usr_b", "run_x"))["seq"] for _ in range(3)]
    assert seqs_a == [1, 2, 3, 4, 5]
    assert seqs_b == [1, 2, 3]


async def test_concurrent_emits_never_share_a_seq(redis: Redis) -> None:
    emitter = EventEmitter(redis)
    events = await asyncio.gather(*(_emit(emitter, "usr_c", f"run_{i}") for i in range(200)))
    assert sorted(e["seq"] for e in events) == list(range(1, 201))
    page = await UserStreams(redis).read_after("usr_c", 0, limit=1000)
    assert [s for s, _ in page.events] == list(range(1, 201))
    assert all(seq_of_line(raw) == s for s, raw in page.events)


async def test_history_read_after_and_epoch(redis: Redis) -> None:
    emitter = EventEmitter(redis)
    first = await _emit(emitter, "usr_d", "run_1")
    for _ in range(4):
        await _emit(emitter, "usr_d", "run_1")
    streams = UserStreams(redis)
    position = await streams.position("usr_d")
    assert position.last_seq == 5 and position.epoch == first["epoch"]
    page = await streams.read_after("usr_d", 3)
    assert [s for s, _ in page.events] == [4, 5] and page.oldest_seq == 1
    assert json.loads(page.events[0][1])["epoch"] == first["epoch"]


async def test_lost_history_starts_a_new_epoch(redis: Redis) -> None:
    emitter = EventEmitter(redis)
    before = await _emit(emitter, "usr_e", "run_1")
    await redis.flushdb()
    after = await _emit(emitter, "usr_e", "run_2")
    assert after["seq"] == 1 and after["epoch"] != before["epoch"]


async def test_lifecycle_events_reach_the_lifecycle_stream(redis: Redis) -> None:
    run = RunEmitter(EventEmitter(redis), user_id="usr_f", run_id="run_f", thread_id="thr",
                     agent="a")
    await run.emit("agent_started", {"input": "x"})
    await run.emit("agent_thinking", {"text": "t", "step": 1})
    await run.emit("agent_completed", {"result": "r", "duration_ms": 1, "tool_calls": 0})
    entries: Any = await redis.xrange(LIFECYCLE_STREAM)
    assert [e[1][b"type"] for e in entries] == [b"agent_started", b"agent_completed"]


async def test_run_emitter_keeps_the_invariants(redis: Redis) -> None:
    run = RunEmitter(EventEmitter(redis), user_id="usr_g", run_id="run_g", thread_id="thr",
                     agent="a")
    with pytest.raises(InvariantError):
        await run.emit("agent_thinking", {"text": "t", "step": 1})
    await run.emit("agent_started", {"input": "x"})
    with pytest.raises(InvariantError):
        await run.emit("agent_started", {"input": "x"})
    await run.emit("tool_executing", {"call_id": "tcl_1", "tool": "t", "arguments": {}})
    await run.emit("agent_cancelled", {"by": "user"})
    with pytest.raises(InvariantError):
        await run.emit("agent_thinking", {"text": "late", "step": 2})
    page = await UserStreams(redis).read_after("usr_g", 0)
    types = [json.loads(raw)["type"] for _, raw in page.events]
    # the open tool call was closed before the terminal event
    assert types == ["agent_started", "tool_executing", "tool_completed", "agent_cancelled"]


def _collect(into: list[int]) -> EventSink:
    def sink(seq: int, _epoch: str, _raw: str) -> None:
        into.append(seq)
    return sink


async def test_hub_routes_live_events_only_to_their_user(redis: Redis) -> None:
    hub = UserEventHub(redis)
    await hub.start()
    got: dict[str, list[int]] = {"usr_h": [], "usr_i": []}
    subs = [Subscription(user, _collect(got[user])) for user in got]
    try:
        for sub in subs:
            await hub.subscribe(sub)
        emitter = EventEmitter(redis)
        for _ in range(3):
            await _emit(emitter, "usr_h", "run_h")
        await _emit(emitter, "usr_i", "run_i")
        for _ in range(50):
            if len(got["usr_h"]) == 3 and len(got["usr_i"]) == 1:
                break
            await asyncio.sleep(0.02)
        assert got == {"usr_h": [1, 2, 3], "usr_i": [1]}
    finally:
        for sub in subs:
            await hub.unsubscribe(sub)
        await hub.stop()


async def test_a_retried_event_is_stored_once(redis: Redis) -> None:
    emitter = EventEmitter(redis)
    args: dict[str, Any] = {"user_id": "usr_j", "run_id": "run_j", "thread_id": "thr",
                            "agent": "a", "type": "agent_started", "payload": {"input": "x"}}
    first = await emitter.emit(**args, number=1)
    again = await emitter.emit(**args, number=1)
    assert first["seq"] == 1 and again["duplicate"] and again["seq"] == 0
    page = await UserStreams(redis).read_after("usr_j", 0)
    assert len(page.events) == 1


async def test_nothing_is_stored_after_a_runs_terminal_event(redis: Redis) -> None:
    emitter = EventEmitter(redis)
    base: dict[str, Any] = {"user_id": "usr_k", "run_id": "run_k", "thread_id": "thr",
                            "agent": "a"}
    await emitter.emit(**base, type="agent_started", payload={"input": "x"}, number=1)
    await emitter.emit(**base, type="agent_failed", number=0, payload={
        "error": {"code": "worker_lost", "message": "gone"}, "cause": "worker_lost"})
    with pytest.raises(RunFinished):  # the lost worker comes back and tries to go on
        await emitter.emit(**base, type="agent_thinking", payload={"text": "t", "step": 1},
                           number=2)
    page = await UserStreams(redis).read_after("usr_k", 0)
    assert [json.loads(raw)["type"] for _, raw in page.events] == ["agent_started",
                                                                  "agent_failed"]


async def test_a_batch_is_numbered_stored_and_published_in_order(redis: Redis) -> None:
    hub = UserEventHub(redis)
    await hub.start()
    got: list[int] = []
    sub = Subscription("usr_m", _collect(got))
    try:
        await hub.subscribe(sub)
        run = RunEmitter(EventEmitter(redis), user_id="usr_m", run_id="run_m",
                         thread_id="thr", agent="a")
        await run.emit("agent_started", {"input": "x"})
        events = await run.emit_many("partial_result", [{"delta": f"d{n}"} for n in range(100)])
        await run.emit("agent_completed", {"result": "r", "duration_ms": 1, "tool_calls": 0})
        assert [e["seq"] for e in events] == list(range(2, 102))
        assert run.events_emitted == 102
        page = await UserStreams(redis).read_after("usr_m", 0, limit=500)
        deltas = [json.loads(raw)["payload"].get("delta") for _, raw in page.events[1:101]]
        assert deltas == [f"d{n}" for n in range(100)]
        for _ in range(100):
            if len(got) == 102:
                break
            await asyncio.sleep(0.02)
        assert got == list(range(1, 103))  # one pub/sub message, split per event
    finally:
        await hub.unsubscribe(sub)
        await hub.stop()


async def test_a_retried_batch_is_stored_once_and_nothing_follows_a_terminal(
        redis: Redis) -> None:
    emitter = EventEmitter(redis)
    base: dict[str, Any] = {"user_id": "usr_n", "run_id": "run_n", "thread_id": "thr"}
    items: list[Any] = [("a", "agent_started", {"input": "x"}),
                        ("a", "partial_result", {"delta": "d"})]
    first = await emitter.emit_batch(**base, items=items, first_number=1)
    again = await emitter.emit_batch(**base, items=items, first_number=1)
    assert [e["seq"] for e in first] == [1, 2] and all(e["duplicate"] for e in again)
    with pytest.raises(RunFinished):
        await emitter.emit_batch(**base, first_number=3, items=[
            ("a", "agent_cancelled", {"by": "user"}), ("a", "partial_result", {"delta": "late"})])
    page = await UserStreams(redis).read_after("usr_n", 0)
    assert [json.loads(raw)["type"] for _, raw in page.events] == [
        "agent_started", "partial_result", "agent_cancelled"]
    run = RunEmitter(emitter, user_id="usr_n", run_id="run_o", thread_id="thr", agent="a")
    await run.emit("agent_started", {"input": "x"})
    with pytest.raises(InvariantError):
        await run.emit_many("agent_completed", [{"result": "r"}])


async def test_an_emit_waits_for_redis_to_return(redis: Redis, redis_server: LocalStack) -> None:
    emitter = EventEmitter(redis, emit_timeout_s=20)
    await _emit(emitter, "usr_l", "run_l")
    redis_server.kill("redis")
    pending = asyncio.create_task(_emit(emitter, "usr_l", "run_l"))
    for _ in range(50):  # the client's own quick retries come first
        if emitter.waiting:
            break
        await asyncio.sleep(0.1)
    assert not pending.done() and emitter.waiting == 1
    await redis_server.astart_service("redis")
    event = await asyncio.wait_for(pending, 15)
    assert event["seq"] == 2 and emitter.waiting == 0


async def test_an_emit_that_cannot_be_kept_fails_loudly(redis: Redis,
                                                        redis_server: LocalStack) -> None:
    emitter = EventEmitter(redis, emit_timeout_s=0.5)
    redis_server.kill("redis")
    try:
        with pytest.raises(EmitError, match=r"within 0\.5s"):
            await _emit(emitter, "usr_m", "run_m")
    finally:
        await redis_server.astart_service("redis")


async def test_an_event_after_an_emit_lost_in_flight_is_not_taken_for_a_retry(
        redis: Redis) -> None:
    class AnswerLost(EventEmitter):
        """Stores the batch, then loses the answer (cancelled while reading it)."""

        lose = True

        async def emit_batch(self, **kwargs: Any) -> Any:
            events = await super().emit_batch(**kwargs)
            if self.lose:
                self.lose = False
                raise asyncio.CancelledError
            return events

    run = RunEmitter(AnswerLost(redis), user_id="usr_p", run_id="run_p", thread_id="thr",
                     agent="a")
    run._emitter.lose = False  # type: ignore[attr-defined]
    await run.emit("agent_started", {"input": "x"})
    run._emitter.lose = True  # type: ignore[attr-defined]
    with pytest.raises(asyncio.CancelledError):
        await run.emit("partial_result", {"delta": "d"})
    cancelled = await run.emit("agent_cancelled", {"by": "user"})
    assert not cancelled["duplicate"]
    page = await UserStreams(redis).read_after("usr_p", 0)
    assert [json.loads(raw)["type"] for _, raw in page.events] == [
        "agent_started", "partial_result", "agent_cancelled"]


async def test_an_oversized_payload_is_stored_and_delivered_cut_and_marked(redis: Redis) -> None:
    emitter = EventEmitter(redis, event_max_bytes=4096)
    event = await emitter.emit(user_id="usr_cap", run_id="run_1", thread_id="thr_1", agent="a",
                               type="partial_result", payload={"text": "y" * 50_000})
    assert event["payload"]["truncated"] == {"original_bytes": 50_011}
    page = await UserStreams(redis).read_after("usr_cap", 0)
    (stored,) = [json.loads(raw) for _, raw in page.events]
    assert stored["payload"] == event["payload"]
    assert len(json.dumps(stored["payload"], separators=(",", ":"))) <= 4096


async def test_history_is_bounded_by_bytes_oldest_first(redis: Redis) -> None:
    emitter = EventEmitter(redis, history_max_bytes=100_000)
    for i in range(50):  # ~10 KB each: about 10 fit
        await emitter.emit(user_id="usr_big", run_id="run_1", thread_id="thr_1", agent="a",
                           type="partial_result", payload={"text": f"{i:02d}" + "z" * 10_000})
    await _emit(emitter, "usr_small", "run_2")
    page = await UserStreams(redis).read_after("usr_big", 0)
    seqs = [s for s, _ in page.events]
    assert seqs == list(range(seqs[0], 51)) and 8 <= len(seqs) <= 10
    stored = sum(len(raw) for _, raw in page.events)
    assert stored <= 100_000
    assert int(await redis.hget(UserKeys("usr_big").meta, "bytes") or 0) == stored
    assert page.oldest_seq == seqs[0]
    small = await UserStreams(redis).read_after("usr_small", 0)
    assert [s for s, _ in small.events] == [1]


async def test_history_byte_count_restarts_when_the_history_is_gone(redis: Redis) -> None:
    emitter = EventEmitter(redis, history_max_bytes=100_000)
    await _emit(emitter, "usr_gone", "run_1")
    await redis.delete(UserKeys("usr_gone").history)
    await _emit(emitter, "usr_gone", "run_1")
    page = await UserStreams(redis).read_after("usr_gone", 0)
    assert int(await redis.hget(UserKeys("usr_gone").meta, "bytes") or 0) == sum(
        len(raw) for _, raw in page.events)


async def test_a_run_whose_acknowledged_events_were_lost_moves_to_a_new_epoch(
        redis: Redis) -> None:
    keys = UserKeys("usr_lost")
    run = RunEmitter(EventEmitter(redis), user_id="usr_lost", run_id="run_q", thread_id="thr",
                     agent="a")
    started = await run.emit("agent_started", {"input": "x"})
    await run.emit("agent_thinking", {"text": "t", "step": 1})
    await run.emit("agent_thinking", {"text": "t", "step": 2})
    assert int(await redis.hget(keys.run("run_q"), "n") or 0) == 3
    # a replica promoted before it had the last two writes: the run's count, the
    # user's seq and history as they were after the first event
    await redis.hset(keys.run("run_q"), "n", 1)
    await redis.hset(keys.meta, "seq", 1)
    await redis.xdel(keys.history, "2-0", "3-0")
    after = await run.emit("partial_result", {"delta": "d"})
    assert after["epoch"] != started["epoch"] and not after["duplicate"]
    assert await redis.hget(keys.meta, "epoch") == after["epoch"].encode()
    # the old epoch's history is gone: what is left is of the new epoch only
    page = await UserStreams(redis).read_after("usr_lost", 0)
    assert [s for s, _ in page.events] == [after["seq"]]
    assert all(json.loads(line)["epoch"] == after["epoch"] for _, line in page.events)
    assert int(await redis.hget(keys.run("run_q"), "n") or 0) == 4
    # the run goes on in the new epoch
    again = await run.emit("partial_result", {"delta": "e"})
    assert again["epoch"] == after["epoch"] and again["seq"] == after["seq"] + 1
    position = await UserStreams(redis).position("usr_lost")
    assert position.epoch == after["epoch"] and position.last_seq == again["seq"]


async def test_an_emit_that_failed_unacknowledged_keeps_the_epoch(redis: Redis) -> None:
    class Failing(EventEmitter):
        """``fail`` emits fail: ``before`` Redis saw them, or after it stored them."""

        fail = 0
        before = True

        async def emit_batch(self, **kwargs: Any) -> Any:
            if self.fail and self.before:
                self.fail -= 1
                raise EmitError("redis unreachable")
            events = await super().emit_batch(**kwargs)
            if self.fail:
                self.fail -= 1
                raise asyncio.CancelledError  # stored, the answer lost
            return events

    emitter = Failing(redis)
    run = RunEmitter(emitter, user_id="usr_skip", run_id="run_s", thread_id="thr", agent="a")
    started = await run.emit("agent_started", {"input": "x"})
    emitter.fail = 2  # numbers 2 and 3 are taken, never stored
    for _ in range(2):
        with pytest.raises(EmitError):
            await run.emit("agent_thinking", {"text": "t", "step": 1})
    emitter.fail, emitter.before = 1, False  # number 4 stored, never acknowledged
    with pytest.raises(asyncio.CancelledError):
        await run.emit("partial_result", {"delta": "d"})
    after = await run.emit("partial_result", {"delta": "e"})
    done = await run.emit("agent_completed", {"result": "r", "duration_ms": 1,
                                              "tool_calls": 0})
    assert {after["epoch"], done["epoch"]} == {started["epoch"]}
    assert [after["seq"], done["seq"]] == [3, 4]
    page = await UserStreams(redis).read_after("usr_skip", 0)
    assert [s for s, _ in page.events] == [1, 2, 3, 4]
    assert {json.loads(line)["epoch"] for _, line in page.events} == {started["epoch"]}
    assert int(await redis.hget(UserKeys("usr_skip").run("run_s"), "n") or 0) == 6


async def test_held_events_go_out_with_the_next_one_in_one_message(redis: Redis) -> None:
    """A thought held before the call it announces, an answer's last deltas held
    before the end (which closes the open call first): each with the event after
    it, in one script call and one pub/sub message, numbered in order."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(UserKeys("usr_h").channel)
    try:
        run = RunEmitter(EventEmitter(redis), user_id="usr_h", run_id="run_h",
                         thread_id="thr", agent="a")
        await run.emit("agent_started", {"input": "x"})
        run.hold("agent_thinking", {"text": "calling", "step": 1})
        executing = await run.emit("tool_executing", {"call_id": "tcl_1", "tool": "t",
                                                      "arguments": {}})
        assert executing["seq"] == 3
        run.hold("partial_result", {"delta": "a"})
        run.hold("partial_result", {"delta": "b"})
        end = await run.emit("agent_completed", {"result": "ab", "duration_ms": 1,
                                                 "tool_calls": 1})
        assert end["seq"] == 7 and run.events_emitted == 7 and run.finished
        lines: list[int] = []
        for _ in range(100):  # (a read that meets the subscription's answer gives None)
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                lines.append(len(message["data"].splitlines()))
            if len(lines) == 3:
                break
        assert lines == [1, 2, 4]
        page = await UserStreams(redis).read_after("usr_h", 0)
        events = [json.loads(raw) for _, raw in page.events]
        assert [e["type"] for e in events] == [
            "agent_started", "agent_thinking", "tool_executing", "partial_result",
            "partial_result", "tool_completed", "agent_completed"]
        assert events[5]["payload"]["error"]["code"] == "interrupted"
        with pytest.raises(InvariantError):
            run.hold("partial_result", {"delta": "late"})
    finally:
        await pubsub.aclose()


async def test_only_batchable_events_of_a_started_run_are_held(redis: Redis) -> None:
    run = RunEmitter(EventEmitter(redis), user_id="usr_i", run_id="run_i", thread_id="thr",
                     agent="a")
    with pytest.raises(InvariantError, match="first event"):
        run.hold("agent_thinking", {"text": "t", "step": 1})
    await run.emit("agent_started", {"input": "x"})
    for kind in ("tool_executing", "agent_completed"):
        with pytest.raises(InvariantError, match="cannot be emitted in a batch"):
            run.hold(kind, {})
    run.hold("agent_thinking", {"text": "t", "step": 1})
    await run.emit("agent_failed", {"error": {"code": "x", "message": "y"}, "cause": "error"})
    page = await UserStreams(redis).read_after("usr_i", 0)
    assert [json.loads(raw)["type"] for _, raw in page.events] == [
        "agent_started", "agent_thinking", "agent_failed"]
