"""Durations counted in fixed buckets, the shape of a Prometheus histogram, for the oplog's syncs."""

from __future__ import annotations

import bisect
import threading
from typing import Final, final

__all__ = ["BOUNDS", "Timings"]

BOUNDS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds of the buckets, in seconds: from a fast NVMe flush to a disk in trouble."""


@final
class Timings:
    """Counts of durations per bucket, and their sum; ``add`` costs a lock and a bisection.

    Examples:
        >>> timings = Timings()
        >>> timings.add(0.003)
        >>> buckets, total = timings.snapshot()
        >>> buckets[3], buckets[-1], total
        ((0.005, 1), (inf, 1), 0.003)
    """

    __slots__ = ("_counts", "_lock", "_sum")

    def __init__(self) -> None:
        self._counts = [0] * (len(BOUNDS) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        """Count one duration."""
        with self._lock:
            self._counts[bisect.bisect_left(BOUNDS, seconds)] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[tuple[float, int]], float]:
        """(cumulative count at or under each bound, the last at infinity; the sum of the durations)."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, count in zip((*BOUNDS, float("inf")), counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return cumulative, total
