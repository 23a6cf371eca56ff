import json

import pytest

from bridge.errors import BridgeError
from bridge.protocol import (
    AuthMessage,
    DeliveryCursor,
    ProtocolError,
    ReauthMessage,
    ResumeMessage,
    StartRunMessage,
    parse_client_message,
    resume_needs_resync,
)


def test_parses_each_message_type() -> None:
    assert isinstance(parse_client_message('{"type":"auth","ticket":"t"}'), AuthMessage)
    resume = parse_client_message('{"type":"resume","after":3,"epoch":"e","request_id":"r"}')
    assert isinstance(resume, ResumeMessage) and resume.after == 3 and resume.request_id == "r"
    start = parse_client_message('{"type":"start_run","thread_id":"thr_1","input":"hi"}')
    assert isinstance(start, StartRunMessage) and start.multitask == "reject"
    reauth = parse_client_message('{"type":"reauth","token":"t","request_id":"r"}')
    assert isinstance(reauth, ReauthMessage) and reauth.token == "t" and reauth.ticket is None


@pytest.mark.parametrize(("frame", "code"), [
    ("not json", "invalid_json"),
    ("[1, 2]", "invalid_message"),
    ('{"type": "teleport"}', "unknown_type"),
    ('{"no": "type"}', "unknown_type"),
    ('{"type": {}}', "unknown_type"),
    ('{"type": []}', "unknown_type"),
    ('{"type": "auth", "ticket": "t", "resume": {"after": -1}}', "invalid_message"),
    ('{"type": "auth", "ticket": "t", "resume": {"after": 1, "x": 2}}', "invalid_message"),
    ('{"type": "resume", "after": -1}', "invalid_message"),
    ('{"type": "resume", "after": "garbage"}', "invalid_message"),
    ('{"type": "start_run", "thread_id": "thr_1"}', "invalid_message"),
    ('{"type": "start_run", "thread_id": "t", "input": "x", "multitask": "yolo"}',
     "invalid_message"),
    ('{"type": "ping", "extra": 1}', "invalid_message"),
    ('{"type": "reauth", "token": 7}', "invalid_message"),
    ('{"type": "reauth", "token": "t", "resume": {"after": 1}}', "invalid_message"),
])
def test_rejects_bad_frames_with_a_precise_code(frame: str, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(frame)
    assert caught.value.code == code
    assert caught.value.frame()["type"] == "error"


def test_error_echoes_request_id() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(json.dumps({"type": "resume", "after": "x", "request_id": "abc"}))
    assert caught.value.frame()["request_id"] == "abc"


def test_cursor_classifies_send_duplicate_gap() -> None:
    cursor = DeliveryCursor(last_sent=4)
    assert cursor.classify(5) == "send"
    assert cursor.classify(4) == "duplicate"
    assert cursor.classify(2) == "duplicate"
    assert cursor.classify(7) == "gap"
    cursor.sent(5)
    assert cursor.last_sent == 5


@pytest.mark.parametrize(("client_epoch", "after", "oldest", "expected"), [
    ("e1", 10, 1, False),      # everything still there
    ("e1", 10, 11, False),     # history starts right after
    ("e1", 10, 12, True),      # trimmed past what the client has
    ("e0", 10, 1, True),       # epoch changed: history was lost
    ("e1", 25, 1, True),       # client claims events never numbered
    ("e1", 20, None, False),   # up to date, nothing to replay
    (None, 5, 1, False),       # no epoch given: trust the numbers
])
def test_resume_decision(client_epoch: str | None, after: int, oldest: int | None,
                         expected: bool) -> None:
    assert resume_needs_resync(client_epoch=client_epoch, after=after, epoch="e1",
                               last_seq=20, oldest_seq=oldest) is expected


def test_an_error_frame_carries_its_extra_members() -> None:
    frame = ProtocolError("rate_limited", "slow down", "r1", retry_after_ms=250).frame()
    assert frame == {"type": "error", "code": "rate_limited", "message": "slow down",
                     "request_id": "r1", "retry_after_ms": 250}


def test_a_protocol_error_is_a_bridge_error() -> None:
    assert issubclass(ProtocolError, BridgeError)
