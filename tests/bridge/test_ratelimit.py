import pytest

from bridge.ratelimit import TokenBucket


def test_a_full_bucket_lets_the_burst_through_then_refuses() -> None:
    bucket = TokenBucket(rate=2.0, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(0.0) == pytest.approx(0.5)


def test_tokens_come_back_at_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=2, now=0.0)
    bucket.take(0.0)
    bucket.take(0.0)
    assert bucket.take(0.05) == pytest.approx(0.05)  # half a token so far
    assert bucket.take(0.1) == 0.0
    assert bucket.take(0.1) > 0.0


def test_a_refusal_spends_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=0.0)
    bucket.take(0.0)
    for _ in range(100):
        assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(1.0) == 0.0


def test_an_idle_bucket_saves_at_most_its_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=3, now=0.0)
    assert [bucket.take(1000.0) for _ in range(4)][:3] == [0.0] * 3
    assert bucket.take(1000.0) > 0.0


def test_a_clock_going_back_adds_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
    bucket.take(10.0)
    assert bucket.take(5.0) == pytest.approx(1.0)


def test_nonsense_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0.0, burst=1, now=0.0)
    with pytest.raises(ValueError):
        TokenBucket(rate=1.0, burst=0, now=0.0)
