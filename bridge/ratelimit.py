"""A token bucket: ``rate`` tokens a second, at most ``burst`` saved up.

Pure: the caller passes the clock, so one bucket serves any clock and tests
need no sleeping.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """Starts full; :meth:`take` spends one token or says how long until one."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a bucket needs rate > 0 and burst >= 1")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> float:
        """Spend a token: 0.0 when one was there, else the seconds until one is
        (nothing is spent then)."""
        if now > self._at:
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate
