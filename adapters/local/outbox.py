"""``InMemoryOutbox``: the outbox's promises (:mod:`adapters.outbox.journal`), for one process's
life.

Used by unit tests and local runs; like ``FileOutbox`` it implements both ``ResultOutbox`` and
``RunMarks``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from domain.job import Job, JobResult


class InMemoryOutbox:
    """The outbox's promises for one process's life."""

    def __init__(self) -> None:
        self._results: dict[str, JobResult] = {}
        self._starts: dict[str, int] = {}
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def put(self, result: JobResult) -> None:
        with self._lock:
            self._results.pop(result.job_id, None)
            self._results[result.job_id] = result

    def put_all(self, results: Sequence[JobResult]) -> None:
        for result in results:
            self.put(result)

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._results.pop(job_id, None)

    def pending(self) -> list[JobResult]:
        with self._lock:
            return list(self._results.values())

    def started(self, job: Job) -> int:
        with self._lock:
            before = self._starts.get(job.id, 0)
            self._starts[job.id] = before + 1
            self._running.add(job.id)
            return before

    def finished(self, job_id: str) -> None:
        with self._lock:
            self._running.discard(job_id)
            self._starts.pop(job_id, None)

    def abandoned(self, job_id: str) -> None:
        with self._lock:
            self._running.discard(job_id)

    def interrupted(self) -> list[tuple[str, int]]:
        with self._lock:
            return [(job_id, self._starts.get(job_id, 1)) for job_id in sorted(self._running)]
