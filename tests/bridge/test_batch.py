"""The event line and batch layout: built in Python as the emit script builds it,
and the script's published batch read back by the fan-out's functions."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis

from bridge.batch import (
    body_tail,
    epoch_of_line,
    event_line,
    seq_of_line,
    split_batch,
)
from bridge.emitter import EventEmitter, RunEmitter
from bridge.streams import UserStreams
from servicekit.rediskeys import UserKeys


def test_an_event_line_round_trips() -> None:
    body = json.dumps({"type": "partial_result", "payload": {"delta": 'a "b"\n{c}'}},
                      separators=(",", ":"))
    line = event_line(42, "e0f1", body_tail(body))
    assert seq_of_line(line) == 42 and epoch_of_line(line) == "e0f1"
    assert json.loads(line) == {"seq": 42, "epoch": "e0f1", **json.loads(body)}
    assert split_batch("\n".join([line, line])) == [line, line]  # no newline inside a line


def test_what_is_not_an_event_line_is_refused() -> None:
    with pytest.raises(ValueError):
        body_tail("[1]")
    with pytest.raises(ValueError):
        seq_of_line('{"type":"x"}')


async def test_the_scripts_batch_is_what_the_layout_says(redis: Redis) -> None:
    keys = UserKeys("usr_batch")
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.channel)
    await pubsub.get_message(timeout=1.0)  # the subscription's confirmation
    run = RunEmitter(EventEmitter(redis), user_id="usr_batch", run_id="run_b",
                     thread_id="thr_b", agent="test")
    await run.emit("agent_started", {"input": "go"})
    await run.emit_many("partial_result", [{"delta": "one\n"}, {"delta": '"two"'}])
    messages: list[str] = []
    while len(messages) < 2:
        message = await asyncio.wait_for(pubsub.get_message(timeout=1.0), 5)
        if message is not None and message["type"] == "message":
            messages.append(message["data"].decode())
    await pubsub.aclose()
    lines = [line for message in messages for line in split_batch(message)]
    stored = (await UserStreams(redis).read_after("usr_batch", 0)).events
    assert lines == [raw for _, raw in stored]  # published exactly as stored
    for seq, raw in stored:
        event = json.loads(raw)
        assert seq_of_line(raw) == seq == event["seq"]
        assert epoch_of_line(raw) == event["epoch"]
        body = {k: v for k, v in event.items() if k not in ("seq", "epoch")}
        assert raw == event_line(seq, event["epoch"],
                                 body_tail(json.dumps(body, separators=(",", ":"))))
    assert [json.loads(line)["payload"].get("delta") for line in lines[1:]] == ["one\n",
                                                                              '"two"']
