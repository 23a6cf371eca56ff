"""What one socket sends, and when: the delivery state machine, without I/O.

The gateway (``backend/ws.py``) feeds it what happens on the receiving side:
the welcome's position (:meth:`Delivery.start`), an event from pub/sub, a
``resume``, the pub/sub link back after a break, a frame to queue, live delivery
allowed (the client's first message or the hold's end: time enters only as that
input). Each answers what to do at once: nothing, :class:`Drain` (start a
sender) or :class:`Close` (a slow consumer).

The sender then pulls :class:`Send`, :class:`ReadPosition` or
:class:`ReadHistory` from :meth:`Delivery.next_action` one at a time, performs
it and reports its result (:meth:`~Delivery.sent`, :meth:`~Delivery.position_read`,
:meth:`~Delivery.history_read`), until :class:`Idle`. Queued items are served in
order, one whole item (a replay and its answer, a gap's replay and the event) at
a time; what arrives meanwhile waits behind it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "CLOSE_TRY_AGAIN",
    "REPLAY_PAGE",
    "Close",
    "Delivery",
    "DeliveryCursor",
    "Drain",
    "Idle",
    "QueueOutcome",
    "ReadHistory",
    "ReadPosition",
    "Resume",
    "Send",
    "SenderAction",
    "resume_needs_resync",
]

CLOSE_TRY_AGAIN: Final = 1013
#: events read from the history at a time when replaying
REPLAY_PAGE: Final = 500


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``text`` as one frame, then call :meth:`Delivery.sent`."""

    text: str


@dataclass(frozen=True, slots=True)
class ReadPosition:
    """Read the user's epoch and last seq, then call :meth:`Delivery.position_read`."""


@dataclass(frozen=True, slots=True)
class ReadHistory:
    """Read up to ``limit`` events with ``seq > after`` and the oldest seq kept,
    then call :meth:`Delivery.history_read`."""

    after: int
    limit: int


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing to send: the sender stops (a later input answers :class:`Drain`)."""


@dataclass(frozen=True, slots=True)
class Drain:
    """Frames wait and no sender is draining them: start one."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket (frames still queued are dropped)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Resume:
    """A client's cursor: replay every event with ``seq > after``."""

    after: int
    epoch: str | None = None
    request_id: str | None = None


SenderAction = Send | ReadPosition | ReadHistory | Idle
#: what an input of the receiving side asks for at once
QueueOutcome = Drain | Close | None


def resume_needs_resync(
    *, client_epoch: str | None, after: int, epoch: str, last_seq: int, oldest_seq: int | None
) -> bool:
    """Whether a ``resume`` must be answered with ``resync_required``.

    True when the history was lost (epoch changed), the client claims events the
    server never numbered, or the history no longer reaches back to ``after + 1``.
    """
    if client_epoch is not None and client_epoch != epoch:
        return True
    if after > last_seq:
        return True
    if after == last_seq:
        return False
    return oldest_seq is None or oldest_seq > after + 1


@dataclass
class DeliveryCursor:
    """The last seq sent on one socket; decides what to do with the next event."""

    last_sent: int

    def classify(self, seq: int) -> Literal["send", "duplicate", "gap"]:
        if seq <= self.last_sent:
            return "duplicate"
        if seq == self.last_sent + 1:
            return "send"
        return "gap"

    def sent(self, seq: int) -> None:
        self.last_sent = max(self.last_sent, seq)


@dataclass(frozen=True, slots=True)
class _Event:
    seq: int
    epoch: str
    raw: str


@dataclass(frozen=True, slots=True)
class _CatchUp:
    pass


@dataclass(frozen=True, slots=True)
class _Frame:
    frame: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Position:
    epoch: str
    last_seq: int


@dataclass(frozen=True, slots=True)
class _Page:
    events: Sequence[tuple[int, str]]
    oldest_seq: int | None


_Item = _Event | _CatchUp | _Frame | Resume
_Reply = _Position | _Page | None
_Steps = Generator[Send | ReadPosition | ReadHistory, _Reply, None]


class Delivery:
    """One socket's outbound queue, cursor and epoch, and the rules that order them."""

    def __init__(self, *, queue_limit: int) -> None:
        self.queue_limit = queue_limit
        self.cursor = DeliveryCursor(0)
        self.epoch = ""
        #: live delivery waits for :meth:`go_live`, so a first ``resume`` goes first
        self.live = False
        self.closed = False
        self._pending: deque[_Item] = deque()
        self._draining = False
        self._step: _Steps | None = None
        self._due: type[Send | ReadPosition | ReadHistory] | None = None
        self._reply: _Reply = None

    @property
    def queued(self) -> int:
        """Items waiting (not counting the one being served)."""
        return len(self._pending)

    # the receiving side's inputs

    def start(self, epoch: str, last_seq: int) -> None:
        """The welcome's position: live events after it are sent."""
        self.epoch = epoch
        self.cursor.last_sent = last_seq

    def event(self, seq: int, epoch: str, raw: str) -> QueueOutcome:
        """An event arrived from pub/sub."""
        return self._queue(_Event(seq, epoch, raw))

    def reconnected(self) -> QueueOutcome:
        """The pub/sub link was down: live events may be missing; catch up."""
        return self._queue(_CatchUp())

    def resume(self, request: Resume, *, auth: bool = False) -> QueueOutcome:
        """A ``resume``. Before live delivery (the client's first message) it goes
        ahead of the events held so far; later, behind what is queued. One carried
        by the auth message (``auth``) goes first and starts live delivery."""
        if auth:
            return self._queue(request, first=True) or self.go_live()
        return self._queue(request, first=not self.live)

    def frame(self, frame: dict[str, Any]) -> QueueOutcome:
        """An answer to the client (sent as JSON, in order with the events)."""
        return self._queue(_Frame(frame))

    def go_live(self) -> QueueOutcome:
        """The client's first message arrived, or the hold ended."""
        self.live = True
        return self._wake()

    def close(self) -> None:
        """The socket is ending: nothing more is queued or sent."""
        self.closed = True
        self._pending.clear()
        self._step = None
        self._due = None
        self._draining = False

    # the sender's side

    def next_action(self) -> SenderAction:
        """What the sender does next; :class:`Idle` when nothing is left."""
        if self._due is not None:
            raise RuntimeError(f"{self._due.__name__} has not been answered")
        while not self.closed and self.live:
            if self._step is None:
                if not self._pending:
                    break
                self._step = self._serve(self._pending.popleft())
            reply, self._reply = self._reply, None
            try:
                action = self._step.send(reply)
            except StopIteration:
                self._step = None
                continue
            self._due = type(action)
            return action
        self._draining = False
        return Idle()

    def sent(self) -> None:
        """The last :class:`Send` went out."""
        self._answer(Send, None)

    def position_read(self, epoch: str, last_seq: int) -> None:
        """The answer to :class:`ReadPosition`."""
        self._answer(ReadPosition, _Position(epoch, last_seq))

    def history_read(self, events: Sequence[tuple[int, str]], oldest_seq: int | None) -> None:
        """The answer to :class:`ReadHistory`: ``(seq, raw)`` in order, and the
        oldest seq the history still holds (None: it is empty)."""
        self._answer(ReadHistory, _Page(events, oldest_seq))

    # internals

    def _answer(self, kind: type[Send | ReadPosition | ReadHistory], reply: _Reply) -> None:
        if self._due is not kind:
            raise RuntimeError(f"no {kind.__name__} is waiting for its answer")
        self._due = None
        self._reply = reply

    def _queue(self, item: _Item, *, first: bool = False) -> QueueOutcome:
        """A full queue marks a slow consumer: it is closed with a resume hint, so
        its backlog never grows past the limit."""
        if self.closed:
            return None
        if len(self._pending) >= self.queue_limit:
            last_sent = self.cursor.last_sent
            self.close()
            return Close(CLOSE_TRY_AGAIN, f"slow consumer; resume after {last_sent}")
        if first:
            self._pending.appendleft(item)
        else:
            self._pending.append(item)
        return self._wake()

    def _wake(self) -> QueueOutcome:
        if self.live and not self.closed and not self._draining and self._pending:
            self._draining = True
            return Drain()
        return None

    def _serve(self, item: _Item) -> _Steps:
        if isinstance(item, _Event):
            yield from self._deliver(item)
        elif isinstance(item, Resume):
            yield from self._resume(item)
        elif isinstance(item, _CatchUp):
            yield from self._catch_up()
        else:
            yield Send(json.dumps(item.frame))

    def _deliver(self, event: _Event) -> _Steps:
        if event.epoch != self.epoch:
            yield from self._epoch_changed(event.epoch, event.seq - 1)
        verdict = self.cursor.classify(event.seq)
        if verdict == "duplicate":
            return
        if verdict == "gap":
            yield from self._replay(until=event.seq - 1)
        yield Send(event.raw)
        self.cursor.sent(event.seq)

    def _epoch_changed(self, epoch: str, last_seq: int) -> _Steps:
        """The user's history was lost (Redis came back empty, or lost its last
        writes): numbering restarted, or goes on from ``last_seq``."""
        self.epoch = epoch
        self.cursor.last_sent = last_seq
        yield Send(json.dumps({"type": "resync_required", "epoch": epoch,
                               "last_seq": last_seq}))

    def _catch_up(self) -> _Steps:
        position = yield ReadPosition()
        assert isinstance(position, _Position)
        if position.epoch != self.epoch or position.last_seq < self.cursor.last_sent:
            # a new epoch, or one whose history went back (a promoted replica lacked
            # events this socket was sent): the numbers sent may come again
            yield from self._epoch_changed(position.epoch, position.last_seq)
        else:
            yield from self._replay(until=position.last_seq)

    def _replay(self, until: int) -> _Steps:
        """Send the history's events after the cursor, up to ``until``, in order."""
        while self.cursor.last_sent < until:
            page = yield ReadHistory(self.cursor.last_sent, REPLAY_PAGE)
            assert isinstance(page, _Page)
            events = [(seq, raw) for seq, raw in page.events if seq <= until]
            if not events:
                return
            for seq, raw in events:
                if self.cursor.classify(seq) != "duplicate":
                    yield Send(raw)
                    self.cursor.sent(seq)

    def _resume(self, request: Resume) -> _Steps:
        position = yield ReadPosition()
        assert isinstance(position, _Position)
        page = yield ReadHistory(request.after, 1)
        assert isinstance(page, _Page)
        self.epoch = position.epoch
        frame: dict[str, Any]
        if resume_needs_resync(client_epoch=request.epoch, after=request.after,
                               epoch=position.epoch, last_seq=position.last_seq,
                               oldest_seq=page.oldest_seq):
            self.cursor.last_sent = position.last_seq
            frame = {"type": "resync_required", "epoch": position.epoch,
                     "last_seq": position.last_seq}
        else:
            self.cursor.last_sent = request.after
            yield from self._replay(until=position.last_seq)
            frame = {"type": "resumed", "epoch": position.epoch, "last_seq": position.last_seq}
        if request.request_id is not None:
            frame["request_id"] = request.request_id
        yield Send(json.dumps(frame))
