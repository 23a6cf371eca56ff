"""The layout of stored and published events, shared by the emitter, ``emit.lua``
and the fan-out.

The emitter serializes an event's body (``type``, ``run_id``, ``thread_id``,
``agent``, ``ts``, ``payload``) as compact JSON and gives the emit script the body
without its opening brace (:func:`body_tail`). The script prefixes
``{"seq":N,"epoch":"E",`` (:func:`event_line`: the same in Python), stores the
line as the history entry ``<seq>-0`` and publishes the lines of one call as one
message, joined by :data:`SEPARATOR` (compact JSON never holds a raw newline). The
fan-out splits a message (:func:`split_batch`) and reads each line's seq and
epoch off its head (:func:`seq_of_line`, :func:`epoch_of_line`) without parsing
the JSON.
"""

from __future__ import annotations

__all__ = ["SEPARATOR", "body_tail", "epoch_of_line", "event_line", "seq_of_line",
           "split_batch"]

SEPARATOR = "\n"
_HEAD = '{"seq":'
_EPOCH = '"epoch":"'


def body_tail(body_json: str) -> str:
    """What the emit script is given of an event's compact JSON body: all but ``{``."""
    if not body_json.startswith("{"):
        raise ValueError("an event body is a JSON object")
    return body_json[1:]


def event_line(seq: int, epoch: str, tail: str) -> str:
    """The stored and published form of an event (what ``emit.lua`` builds)."""
    return f'{_HEAD}{seq},{_EPOCH}{epoch}",{tail}'


def split_batch(message: str) -> list[str]:
    """The event lines of one published message."""
    return message.split(SEPARATOR)


def seq_of_line(line: str) -> int:
    """The seq at the head of an event line."""
    if not line.startswith(_HEAD):
        raise ValueError("not an event line of the emit script")
    return int(line[len(_HEAD) : line.index(",", len(_HEAD))])


def epoch_of_line(line: str) -> str:
    """The epoch at the head of an event line."""
    start = line.index(_EPOCH) + len(_EPOCH)
    return line[start : line.index('"', start)]
