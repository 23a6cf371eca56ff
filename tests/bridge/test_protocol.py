import json

import pytest

from bridge.errors import BridgeError
from bridge.protocol import (
    AuthMessage,
    ProtocolError,
    ReauthMessage,
    ResumeMessage,
    StartRunMessage,
    parse_client_message,
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


def test_an_error_frame_carries_its_extra_members() -> None:
    frame = ProtocolError("rate_limited", "slow down", "r1", retry_after_ms=250).frame()
    assert frame == {"type": "error", "code": "rate_limited", "message": "slow down",
                     "request_id": "r1", "retry_after_ms": 250}


def test_a_protocol_error_is_a_bridge_error() -> None:
    assert issubclass(ProtocolError, BridgeError)
