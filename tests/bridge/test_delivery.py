"""The delivery core without a socket: inputs in, actions out, a history in memory."""

import json
from dataclasses import dataclass, field

import pytest

from bridge.delivery import (
    CLOSE_TRY_AGAIN,
    REPLAY_PAGE,
    Close,
    Delivery,
    DeliveryCursor,
    Drain,
    Idle,
    ReadHistory,
    ReadPosition,
    Resume,
    Send,
    SenderAction,
    resume_needs_resync,
)


def raw(seq: int, epoch: str = "e1") -> str:
    return json.dumps({"type": "partial_result", "seq": seq, "epoch": epoch})


def seqs(texts: list[str]) -> list[int | str]:
    """Each sent frame as its event's seq, or its type for the other frames."""
    out: list[int | str] = []
    for text in texts:
        frame = json.loads(text)
        out.append(frame["seq"] if frame["type"] == "partial_result" else frame["type"])
    return out


@dataclass
class History:
    """A user's history: events ``first..last_seq`` of ``epoch`` (older ones trimmed)."""

    last_seq: int
    first: int = 1
    epoch: str = "e1"
    reads: list[SenderAction] = field(default_factory=list)

    def answer(self, delivery: Delivery, action: SenderAction) -> None:
        self.reads.append(action)
        if isinstance(action, ReadPosition):
            delivery.position_read(self.epoch, self.last_seq)
        elif isinstance(action, ReadHistory):
            start = max(action.after + 1, self.first)
            stop = min(start + action.limit, self.last_seq + 1)
            oldest = self.first if self.last_seq >= self.first else None
            delivery.history_read([(s, raw(s, self.epoch)) for s in range(start, stop)], oldest)


def drain(delivery: Delivery, history: History | None = None) -> list[str]:
    """Run the sender until it is idle: what it sent, in order."""
    history = history or History(last_seq=0)
    sent: list[str] = []
    while True:
        action = delivery.next_action()
        if isinstance(action, Idle):
            return sent
        if isinstance(action, Send):
            sent.append(action.text)
            delivery.sent()
        else:
            history.answer(delivery, action)


def live(epoch: str = "e1", last_seq: int = 0, queue_limit: int = 100) -> Delivery:
    delivery = Delivery(queue_limit=queue_limit)
    delivery.start(epoch, last_seq)
    assert delivery.go_live() is None  # nothing waits yet
    return delivery


# the cursor and the resume rule


def test_cursor_classifies_send_duplicate_gap() -> None:
    cursor = DeliveryCursor(last_sent=4)
    assert cursor.classify(5) == "send"
    assert cursor.classify(4) == "duplicate"
    assert cursor.classify(2) == "duplicate"
    assert cursor.classify(7) == "gap"
    cursor.sent(5)
    assert cursor.last_sent == 5
    cursor.sent(3)  # never moves back
    assert cursor.last_sent == 5


@pytest.mark.parametrize(("client_epoch", "after", "oldest", "expected"), [
    ("e1", 10, 1, False),      # everything still there
    ("e1", 10, 11, False),     # history starts right after
    ("e1", 10, 12, True),      # trimmed past what the client has
    ("e0", 10, 1, True),       # epoch changed: history was lost
    ("e1", 25, 1, True),       # client claims events never numbered
    ("e1", 20, None, False),   # up to date, nothing to replay
    (None, 5, 1, False),       # no epoch given: trust the numbers
    ("e1", 5, None, True),     # events to replay, but the history is empty
])
def test_resume_decision(client_epoch: str | None, after: int, oldest: int | None,
                         expected: bool) -> None:
    assert resume_needs_resync(client_epoch=client_epoch, after=after, epoch="e1",
                               last_seq=20, oldest_seq=oldest) is expected


# the live hold


def test_live_events_wait_for_the_hold_then_go_out_in_order() -> None:
    delivery = Delivery(queue_limit=100)
    delivery.start("e1", 4)
    assert delivery.event(5, "e1", raw(5)) is None
    assert delivery.event(6, "e1", raw(6)) is None
    assert delivery.next_action() == Idle()  # not live: a stray sender sends nothing
    assert delivery.queued == 2
    assert delivery.go_live() == Drain()
    assert drain(delivery) == [raw(5), raw(6)]
    assert delivery.next_action() == Idle()


def test_one_sender_at_a_time() -> None:
    delivery = live(last_seq=0)
    assert delivery.event(1, "e1", raw(1)) == Drain()
    assert delivery.event(2, "e1", raw(2)) is None  # the sender takes it too
    assert delivery.frame({"type": "pong"}) is None
    assert seqs(drain(delivery)) == [1, 2, "pong"]
    assert delivery.event(3, "e1", raw(3)) == Drain()  # the sender stopped: a new one
    assert delivery.go_live() is None  # already draining
    assert drain(delivery) == [raw(3)]


def test_a_new_socket_sends_only_events_after_the_welcome() -> None:
    delivery = live(last_seq=7)
    for seq in (6, 7, 8):
        delivery.event(seq, "e1", raw(seq))
    assert seqs(drain(delivery)) == [8]


# resume


def test_resume_first_replays_then_resumed_then_live_events_in_order() -> None:
    delivery = Delivery(queue_limit=100)
    delivery.start("e1", 10)
    delivery.event(11, "e1", raw(11))  # held: the client has not spoken yet
    delivery.event(12, "e1", raw(12))
    assert delivery.resume(Resume(7, "e1", "r1")) is None  # ahead of the held events
    assert delivery.go_live() == Drain()
    assert delivery.event(13, "e1", raw(13)) is None
    sent = drain(delivery, History(last_seq=12))
    assert seqs(sent) == [8, 9, 10, 11, 12, "resumed", 13]  # the held 11 and 12: dropped
    assert json.loads(sent[5]) == {"type": "resumed", "epoch": "e1", "last_seq": 12,
                                   "request_id": "r1"}
    assert delivery.cursor.last_sent == 13


def test_resume_reads_the_position_then_the_oldest_event_then_pages() -> None:
    history = History(last_seq=10)
    delivery = Delivery(queue_limit=100)
    delivery.start("e1", 10)
    delivery.resume(Resume(7))
    delivery.go_live()
    sent = drain(delivery, history)
    assert history.reads == [ReadPosition(), ReadHistory(7, 1), ReadHistory(7, REPLAY_PAGE)]
    assert sent[-1] == '{"type": "resumed", "epoch": "e1", "last_seq": 10}'  # no request_id


def test_a_held_event_already_replayed_is_dropped() -> None:
    delivery = Delivery(queue_limit=100)
    delivery.start("e1", 10)
    delivery.event(11, "e1", raw(11))
    delivery.resume(Resume(9))
    delivery.go_live()
    assert seqs(drain(delivery, History(last_seq=11))) == [10, 11, "resumed"]


def test_resume_in_the_auth_message_goes_first_and_starts_live_delivery() -> None:
    delivery = Delivery(queue_limit=100)
    delivery.start("e1", 5)
    delivery.event(6, "e1", raw(6))
    assert delivery.resume(Resume(3, "e1"), auth=True) == Drain()
    assert delivery.live
    assert seqs(drain(delivery, History(last_seq=6))) == [4, 5, 6, "resumed"]


def test_a_resume_once_live_waits_behind_the_queue_and_replays_what_was_sent() -> None:
    delivery = live(last_seq=5)
    delivery.event(6, "e1", raw(6))
    delivery.resume(Resume(4, request_id="r"))
    history = History(last_seq=6)
    assert seqs(drain(delivery, history)) == [6, 5, 6, "resumed"]  # the client drops the 6


def test_a_resume_up_to_date_replays_nothing() -> None:
    delivery = live(last_seq=9)
    delivery.resume(Resume(9, "e1"))
    history = History(last_seq=9)
    assert seqs(drain(delivery, history)) == ["resumed"]
    assert history.reads == [ReadPosition(), ReadHistory(9, 1)]


@pytest.mark.parametrize("resume", [
    Resume(5, "e1", "r9"),  # the history was trimmed past the client's cursor
    Resume(2, "e0", "r9"),  # another epoch: the history was lost
    Resume(40, None, "r9"),  # events never numbered
])
def test_a_resume_the_history_cannot_serve_is_answered_resync_required(
        resume: Resume) -> None:
    delivery = live(last_seq=20)
    delivery.resume(resume)
    sent = drain(delivery, History(last_seq=20, first=8))
    assert [json.loads(text) for text in sent] == [
        {"type": "resync_required", "epoch": "e1", "last_seq": 20, "request_id": "r9"}]
    delivery.event(20, "e1", raw(20))  # live from the answer's last_seq on
    delivery.event(21, "e1", raw(21))
    assert seqs(drain(delivery)) == [21]


def test_a_resync_adopts_the_servers_epoch() -> None:
    delivery = live(epoch="e1", last_seq=3)
    delivery.resume(Resume(3, "e1"))
    assert [json.loads(text) for text in drain(delivery, History(last_seq=1, epoch="e2"))] == [
        {"type": "resync_required", "epoch": "e2", "last_seq": 1}]
    delivery.event(2, "e2", raw(2, "e2"))
    assert drain(delivery) == [raw(2, "e2")]


# duplicates and gaps


def test_duplicates_are_dropped() -> None:
    delivery = live(last_seq=5)
    for seq in (5, 3, 6, 6, 7, 5):
        delivery.event(seq, "e1", raw(seq))
    assert seqs(drain(delivery)) == [6, 7]


def test_a_gap_is_filled_from_the_history_first() -> None:
    delivery = live(last_seq=5)
    delivery.event(9, "e1", raw(9))
    delivery.event(8, "e1", raw(8))  # late: already replayed
    delivery.event(10, "e1", raw(10))
    history = History(last_seq=10)
    assert seqs(drain(delivery, history)) == [6, 7, 8, 9, 10]
    assert history.reads == [ReadHistory(5, REPLAY_PAGE)]  # events after 8 are not replayed


def test_a_long_gap_is_replayed_page_by_page() -> None:
    delivery = live(last_seq=0)
    delivery.event(1201, "e1", raw(1201))
    history = History(last_seq=1201)
    assert seqs(drain(delivery, history)) == list(range(1, 1202))
    assert history.reads == [ReadHistory(0, REPLAY_PAGE), ReadHistory(500, REPLAY_PAGE),
                             ReadHistory(1000, REPLAY_PAGE)]


def test_a_gap_replay_past_the_trimmed_history_sends_what_is_left() -> None:
    # the resume rule answers resync_required here; a gap found live replays what the
    # history still holds (a client sees the jump in seq)
    delivery = live(last_seq=5)
    delivery.event(12, "e1", raw(12))
    assert seqs(drain(delivery, History(last_seq=12, first=9))) == [9, 10, 11, 12]


def test_a_gap_the_history_no_longer_holds_at_all_sends_the_event() -> None:
    delivery = live(last_seq=5)
    delivery.event(12, "e1", raw(12))
    assert seqs(drain(delivery, History(last_seq=12, first=13))) == [12]


# epoch change


def test_an_event_of_a_new_epoch_is_preceded_by_resync_required() -> None:
    delivery = live(epoch="e1", last_seq=30)
    delivery.event(1, "e2", raw(1, "e2"))
    delivery.event(2, "e2", raw(2, "e2"))
    sent = drain(delivery)
    assert sent[0] == '{"type": "resync_required", "epoch": "e2", "last_seq": 0}'
    assert sent[1:] == [raw(1, "e2"), raw(2, "e2")]
    assert delivery.epoch == "e2"


def test_a_new_epoch_starts_at_the_events_seq() -> None:
    delivery = live(epoch="e1", last_seq=30)
    delivery.event(3, "e2", raw(3, "e2"))  # its 1 and 2 never reached this replica
    history = History(last_seq=3, epoch="e2")
    sent = drain(delivery, history)
    assert json.loads(sent[0]) == {"type": "resync_required", "epoch": "e2", "last_seq": 2}
    assert sent[1:] == [raw(3, "e2")]
    assert history.reads == []


# catch-up after the pub/sub link came back


def test_catch_up_replays_what_pub_sub_missed() -> None:
    delivery = live(last_seq=3)
    assert delivery.reconnected() == Drain()
    delivery.event(5, "e1", raw(5))  # arrived after the link came back: a duplicate now
    delivery.event(7, "e1", raw(7))
    history = History(last_seq=6)
    assert seqs(drain(delivery, history)) == [4, 5, 6, 7]
    assert history.reads == [ReadPosition(), ReadHistory(3, REPLAY_PAGE)]


def test_catch_up_with_nothing_missed_sends_nothing() -> None:
    delivery = live(last_seq=6)
    delivery.reconnected()
    history = History(last_seq=6)
    assert drain(delivery, history) == []
    assert history.reads == [ReadPosition()]


def test_catch_up_across_an_epoch_change_is_resync_required() -> None:
    delivery = live(epoch="e1", last_seq=40)
    delivery.reconnected()
    history = History(last_seq=2, epoch="e2")
    assert [json.loads(t) for t in drain(delivery, history)] == [
        {"type": "resync_required", "epoch": "e2", "last_seq": 2}]
    assert history.reads == [ReadPosition()]
    delivery.event(3, "e2", raw(3, "e2"))
    assert drain(delivery) == [raw(3, "e2")]


# order of frames


def test_frames_and_events_leave_in_the_order_queued() -> None:
    delivery = live(last_seq=0)
    delivery.frame({"type": "run_accepted", "run_id": "run_1", "request_id": "a"})
    delivery.event(1, "e1", raw(1))
    delivery.frame({"type": "pong"})
    sent = drain(delivery)
    assert sent[0] == '{"type": "run_accepted", "run_id": "run_1", "request_id": "a"}'
    assert seqs(sent) == ["run_accepted", 1, "pong"]


def test_what_is_queued_while_replaying_keeps_its_order() -> None:
    delivery = live(last_seq=2)
    delivery.resume(Resume(0, "e1", "r"))
    history = History(last_seq=4)
    action = delivery.next_action()
    while not isinstance(action, ReadHistory) or action.limit != REPLAY_PAGE:
        history.answer(delivery, action)
        action = delivery.next_action()
    # the replay's read is on its way: more arrives meanwhile
    delivery.frame({"type": "pong"})
    delivery.event(4, "e1", raw(4))
    delivery.event(5, "e1", raw(5))
    delivery.frame({"type": "cancel_accepted", "run_id": "run_1"})
    history.last_seq = 5
    history.answer(delivery, action)
    sent = drain(delivery, history)
    assert seqs(sent) == [1, 2, 3, 4, "resumed", "pong", 5, "cancel_accepted"]
    assert json.loads(sent[4])["last_seq"] == 4  # the position the resume read


def test_a_gap_replay_comes_before_frames_queued_after_the_event() -> None:
    delivery = live(last_seq=1)
    delivery.event(4, "e1", raw(4))
    delivery.frame({"type": "pong"})
    assert seqs(drain(delivery, History(last_seq=4))) == [2, 3, 4, "pong"]


# slow consumers


def test_a_full_queue_closes_a_slow_consumer_with_a_resume_hint() -> None:
    delivery = Delivery(queue_limit=3)
    delivery.start("e1", 4)
    for seq in (5, 6, 7):
        assert delivery.event(seq, "e1", raw(seq)) is None
    assert delivery.event(8, "e1", raw(8)) == Close(CLOSE_TRY_AGAIN,
                                                    "slow consumer; resume after 4")
    assert delivery.closed
    assert delivery.event(9, "e1", raw(9)) is None  # nothing more
    assert delivery.frame({"type": "pong"}) is None
    assert delivery.go_live() is None
    assert delivery.next_action() == Idle()


def test_the_hint_names_the_last_event_sent_not_the_one_in_flight() -> None:
    delivery = live(last_seq=0, queue_limit=2)
    delivery.event(1, "e1", raw(1))
    assert drain(delivery) == [raw(1)]
    delivery.event(2, "e1", raw(2))
    assert delivery.next_action() == Send(raw(2))  # the client is not reading
    delivery.event(3, "e1", raw(3))
    delivery.event(4, "e1", raw(4))
    outcome = delivery.event(5, "e1", raw(5))
    assert outcome == Close(CLOSE_TRY_AGAIN, "slow consumer; resume after 1")


def test_a_replay_does_not_count_against_the_queue() -> None:
    delivery = live(last_seq=0, queue_limit=2)
    delivery.resume(Resume(0))
    assert seqs(drain(delivery, History(last_seq=50)))[-1] == "resumed"
    assert not delivery.closed


# the sender's protocol


def test_close_drops_what_is_queued() -> None:
    delivery = live(last_seq=0)
    delivery.event(1, "e1", raw(1))
    delivery.close()
    assert delivery.next_action() == Idle()
    assert delivery.event(2, "e1", raw(2)) is None


def test_close_while_an_action_is_due_stops_the_sender() -> None:
    delivery = live(last_seq=0)
    delivery.reconnected()
    assert delivery.next_action() == ReadPosition()
    delivery.close()
    assert delivery.next_action() == Idle()


def test_an_action_must_be_answered_before_the_next() -> None:
    delivery = live(last_seq=0)
    delivery.event(1, "e1", raw(1))
    assert delivery.next_action() == Send(raw(1))
    with pytest.raises(RuntimeError, match="Send"):
        delivery.next_action()
    with pytest.raises(RuntimeError, match="ReadHistory"):
        delivery.history_read([], None)
    delivery.sent()
    with pytest.raises(RuntimeError):
        delivery.sent()
    assert delivery.next_action() == Idle()


def test_catch_up_to_a_history_that_went_back_is_resync_required() -> None:
    # a promoted replica lacked the last events: same epoch, a lower last seq than
    # this socket was already sent; the numbers 11 and 12 will be given again
    delivery = live(epoch="e1", last_seq=8)
    for seq in (9, 10, 11, 12):
        delivery.event(seq, "e1", raw(seq))
    assert seqs(drain(delivery)) == [9, 10, 11, 12]
    assert delivery.cursor.last_sent == 12
    assert delivery.reconnected() == Drain()
    history = History(last_seq=10)
    assert [json.loads(t) for t in drain(delivery, history)] == [
        {"type": "resync_required", "epoch": "e1", "last_seq": 10}]
    assert history.reads == [ReadPosition()]  # nothing replayed
    assert delivery.epoch == "e1" and delivery.cursor.last_sent == 10
    # the next event after the position is sent, though a 11 went out before
    delivery.event(10, "e1", raw(10))  # a late duplicate of the position: dropped
    delivery.event(11, "e1", raw(11))
    delivery.event(12, "e1", raw(12))
    assert seqs(drain(delivery)) == [11, 12]


def test_catch_up_at_the_same_position_as_sent_is_not_a_resync() -> None:
    delivery = live(epoch="e1", last_seq=8)
    delivery.event(9, "e1", raw(9))
    drain(delivery)
    delivery.reconnected()
    history = History(last_seq=9)
    assert drain(delivery, history) == []  # last_seq == sent: nothing went back
    assert history.reads == [ReadPosition()]
