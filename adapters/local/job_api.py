"""An in-memory job API: a queue of jobs and a record of everything the worker sent back.

It is a real implementation of the ``JobApi`` and ``JobStopSource`` ports, used by the unit
tests and by the local run (fed from ``test_inputs.json``). ``take`` long-polls like the real
API (it waits up to ``poll_timeout`` seconds for a job) so a worker on it never spins.

What it records, in plain attributes: ``takes`` (calls), ``taken`` (job ids in order),
``results`` (job id -> last result), ``posted`` (every result post, duplicates included),
``progress`` ((job id, update) in order), ``streamed`` ((job id, chunk) in order), ``pings``
(tuples of job ids).
"""

from __future__ import annotations

import collections
import itertools
import json
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from domain.errors import ApiUnavailable
from domain.job import Job, JobResult, job_from_wire
from domain.ports import Clock


class _Batch:
    def __init__(self, payloads: list[object]) -> None:
        self.payloads = payloads


class InMemoryJobApi:
    """A job queue in memory. ``fail_posts`` makes the next N result posts fail (transient)."""

    def __init__(self, clock: Clock, *, poll_timeout: float = 0.05) -> None:
        self._clock = clock
        self._poll_timeout = poll_timeout
        self._cond = threading.Condition()
        self._queue: collections.deque[object] = collections.deque()
        self._stops: list[str] = []
        self._ids = itertools.count(1)
        self.fail_posts = 0
        self.takes = 0
        self.takes_batch_sizes: list[int] = []
        self.events: list[tuple[str, str]] = []  # ("stream" | "result", job id), in order
        self.taken: list[str] = []
        self.results: dict[str, JobResult] = {}
        self.posted: list[JobResult] = []
        self.progress: list[tuple[str, Any]] = []
        self.streamed: list[tuple[str, Any]] = []
        self.pings: list[tuple[str, ...]] = []
        self.rejected: list[object] = []

    # --- feeding it ---------------------------------------------------------------------
    def submit(self, job_input: Any, job_id: str | None = None) -> str:
        """Queue a job; returns its id."""
        job_id = job_id if job_id is not None else f"job-{next(self._ids)}"
        self.submit_raw({"id": job_id, "input": job_input})
        return job_id

    def submit_raw(self, payload: object) -> None:
        """Queue a raw payload exactly as a take endpoint would return it (for bad-input tests)."""
        with self._cond:
            self._queue.append(payload)
            self._cond.notify_all()

    def submit_batch(self, payloads: Iterable[object]) -> None:
        """Queue payloads that one take hands out together, whatever it asked for (as a server
        that answers a take with a list does)."""
        with self._cond:
            self._queue.append(_Batch(list(payloads)))
            self._cond.notify_all()

    def submit_many(self, payloads: Iterable[object]) -> None:
        for payload in payloads:
            self.submit_raw(payload)

    def request_stop(self, job_id: str) -> None:
        """Ask the worker to cancel ``job_id`` (as the platform's job-stop endpoint does)."""
        with self._cond:
            self._stops.append(job_id)
            self._cond.notify_all()

    @property
    def stops_pending(self) -> int:
        """Job-stop requests not yet read by the worker."""
        with self._cond:
            return len(self._stops)

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    # --- the JobApi port ----------------------------------------------------------------
    def take(self, *, job_in_progress: bool, max_jobs: int = 1) -> list[Job]:
        with self._cond:
            self.takes += 1
            self.takes_batch_sizes.append(max_jobs)
            self._cond.wait_for(lambda: bool(self._queue), self._poll_timeout)
            payloads = [self._queue.popleft() for _ in range(min(max_jobs, len(self._queue)))]
        if len(payloads) == 1 and isinstance(payloads[0], _Batch):
            payloads = payloads[0].payloads
        jobs: list[Job] = []
        for payload in payloads:
            job = job_from_wire(payload, self._clock.now())
            if job is None:
                self.rejected.append(payload)
                continue
            self.taken.append(job.id)
            jobs.append(job)
        return jobs

    def post_result(self, result: JobResult) -> None:
        json.dumps(result.to_wire())  # what the real API would do: refuse non-JSON output
        with self._cond:
            if self.fail_posts > 0:
                self.fail_posts -= 1
                raise ApiUnavailable("in-memory job API: result post failed (injected)")
            self.posted.append(result)
            self.results[result.job_id] = result
            self.events.append(("result", result.job_id))
            self._cond.notify_all()

    def post_stream(self, job_id: str, chunk: Any) -> None:
        json.dumps(chunk)
        with self._cond:
            if self.fail_posts > 0:
                self.fail_posts -= 1
                raise ApiUnavailable("in-memory job API: stream post failed (injected)")
            self.streamed.append((job_id, chunk))
            self.events.append(("stream", job_id))

    def post_progress(self, job_id: str, progress: Any) -> None:
        with self._cond:
            self.progress.append((job_id, progress))

    def ping(self, job_ids: Sequence[str]) -> None:
        with self._cond:
            self.pings.append(tuple(job_ids))

    # --- the JobStopSource port ---------------------------------------------------------
    def jobs_to_stop(self) -> list[str]:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._stops), self._poll_timeout)
            stops, self._stops = self._stops, []
            return stops

    # --- for tests ----------------------------------------------------------------------
    def wait_for_results(self, count: int, timeout: float = 10.0) -> bool:
        """Block until ``count`` distinct jobs have results, or ``timeout`` seconds pass."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.results) >= count, timeout)
