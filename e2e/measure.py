"""Measures shared by scenarios, tests and benchmarks."""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["cpu_seconds", "latency_metrics", "per_second", "percentile", "rss_kib", "thin"]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_metrics(name: str, values: list[float]) -> dict[str, float]:
    """``p50_<name>``, ``p95_<name>``, ``p99_<name>`` and ``max_<name>`` of ``values``
    (none when there are no values, so a limit on them reports "not measured")."""
    if not values:
        return {}
    return {f"p50_{name}": percentile(values, 0.50), f"p95_{name}": percentile(values, 0.95),
            f"p99_{name}": percentile(values, 0.99), f"max_{name}": max(values)}


def per_second(times: list[float], start: float, end: float) -> list[tuple[float, float]]:
    """How many of ``times`` fall in each whole second from ``start`` to ``end``:
    ``(seconds since start, count)`` pairs, for an events-per-second chart."""
    if end <= start:
        return []
    buckets = [0] * math.ceil(end - start)
    for at in times:
        index = int(at - start)
        if 0 <= index < len(buckets):
            buckets[index] += 1
    return [(float(i), float(count)) for i, count in enumerate(buckets)]


def thin(values: list[float], limit: int = 2000) -> list[float]:
    """At most ``limit`` of ``values``, evenly strided: enough for a histogram in a
    report that stays small (percentiles are computed on every value first)."""
    if len(values) <= limit:
        return list(values)
    step = len(values) / limit
    return [values[int(i * step)] for i in range(limit)]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process and its live children have used so far."""
    import psutil  # in the local stack's extra

    process = psutil.Process(pid)
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        try:
            times = each.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ProcessLookupError(f"no VmRSS for pid {pid}")
