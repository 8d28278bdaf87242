"""The worker's counters and timings, as plain numbers the job loop can update cheaply.

The job loop only calls ``count`` and ``observe`` (never blocking, never raising). The health
server (``app.health``) exposes them in Prometheus format through prometheus-client, which is
imported only when the health port is on, so the worker starts fast without it.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable

COUNTERS = {
    "jobs_taken": "Jobs taken from the job API.",
    "jobs_done": "Jobs whose successful result the job API accepted.",
    "jobs_failed": "Jobs whose error result the job API accepted.",
    "take_errors": "Take requests that failed (API down, 5xx, 429).",
    "result_post_retries": "Result posts that failed and were kept for a later try.",
    "duplicate_jobs": "Jobs handed out again while this worker still held them (answered once).",
}

STAGES = {
    "take": "Waiting for the job API to hand out a job (long-poll included).",
    "model": "Running the model on one job.",
    "store": "Storing one job's outputs.",
    "post": "Posting one job's result.",
}

BUCKETS = (0.001, 0.005, 0.02, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class Histogram:
    """Cumulative-bucket histogram in Prometheus's shape: counts per upper bound, sum, count."""

    def __init__(self) -> None:
        self.buckets = [0] * len(BUCKETS)
        self.total = 0.0
        self.count = 0

    def add(self, seconds: float) -> None:
        index = bisect.bisect_left(BUCKETS, seconds)
        if index < len(BUCKETS):
            self.buckets[index] += 1
        self.total += seconds
        self.count += 1


class Metrics:
    """Counters, per-stage histograms and read-on-demand gauges, shared by the worker's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, float] = dict.fromkeys(COUNTERS, 0.0)
        self._stages = {stage: Histogram() for stage in STAGES}
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def count(self, name: str, amount: float = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    def observe(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._stages[stage].add(max(0.0, seconds))

    def gauge(self, name: str, text: str, read: Callable[[], float]) -> None:
        """Register a gauge read when scraped (outbox depth, seconds since the last job)."""
        self.gauges[name] = (text, read)

    def snapshot(self) -> tuple[dict[str, float], dict[str, tuple[list[int], float, int]]]:
        """Counters, and per stage (bucket counts, sum, count), copied under the lock."""
        with self._lock:
            stages = {
                name: (list(h.buckets), h.total, h.count) for name, h in self._stages.items()
            }
            return dict(self._counters), stages
