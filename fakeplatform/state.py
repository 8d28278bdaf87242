"""What the fake platform knows: the queue, the jobs and their results, progress and streams.

One condition guards it all; every change notifies it, so long polls (take, job-stop,
runsync) and tests (``wait_until``) wake on the change instead of polling. Times are
``time.monotonic`` seconds; answers show them as RunPod does, in milliseconds.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
RETRYABLE = frozenset({"FAILED", "TIMED_OUT"})
WORKER_SEEN_S = 60.0  # a worker that took, pinged or polled within this is counted by /health


@dataclass
class FakeJob:
    """A job as the platform knows it."""

    id: str
    payload: Any
    status: str = "IN_QUEUE"
    worker: str | None = None
    output: Any = None
    error: Any = None
    final: bool = False
    is_stream: bool = False  # the final result came with isStream=true
    progress: list[Any] = field(default_factory=list)
    chunks: list[Any] = field(default_factory=list)  # job-stream posts, in order
    chunks_read: int = 0  # how many of them GET /stream has handed out
    queued_at: float = field(default_factory=time.monotonic)
    taken_at: float | None = None
    done_at: float | None = None


class PlatformState:
    """The queue and the jobs. What happened is kept in plain attributes for tests:
    ``results`` (job id -> the first final body), ``progress`` and ``streamed`` ((job id,
    output) in order), ``pings`` ((worker, job ids)), ``duplicates``, ``late_progress``,
    ``late_stream``, ``taken``, ``terminations`` (pod ids), ``retried`` (job ids)."""

    def __init__(self, long_poll_s: float) -> None:
        self.long_poll_s = long_poll_s
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._queue: collections.deque[tuple[str | None, Any]] = collections.deque()
        self._stops: dict[str, list[str]] = {}
        self._seen: dict[str, float] = {}  # worker -> last take, ping or job-stop poll
        self._ids = itertools.count(1)
        self.jobs: dict[str, FakeJob] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.progress: list[tuple[str, Any]] = []
        self.streamed: list[tuple[str, Any]] = []
        self.pings: list[tuple[str, tuple[str, ...]]] = []
        self.duplicates: list[str] = []
        self.late_progress: list[str] = []
        self.late_stream: list[str] = []
        self.taken: list[str] = []
        self.terminations: list[str] = []
        self.retried: list[str] = []

    # --- jobs in --------------------------------------------------------------------------
    def submit(self, job_input: Any, job_id: str | None = None,
               fields: dict[str, Any] | None = None) -> str:
        """Queue ``{"id", "input"}`` with the platform's other ``fields`` (``s3Config``...);
        returns the id. Raises ``ValueError`` on a taken id."""
        job_id = job_id if job_id is not None else self.new_id()
        self.submit_raw({**(fields or {}), "id": job_id, "input": job_input})
        return job_id

    def submit_raw(self, payload: Any) -> str | None:
        """Queue ``payload`` exactly as take will hand it out (for malformed-job tests).

        Returns its id when it has a readable one (then its result is accepted), else None.
        """
        raw_id = payload.get("id") if isinstance(payload, dict) else None
        job_id = str(raw_id) if isinstance(raw_id, str | int) and raw_id != "" else None
        with self._cond:
            if job_id is not None:
                if job_id in self.jobs:
                    raise ValueError(f"job id {job_id!r} is already used")
                self.jobs[job_id] = FakeJob(job_id, payload)
            self._queue.append((job_id, payload))
            self._cond.notify_all()
        return job_id

    def new_id(self) -> str:
        """An id no job has, as ``/run`` gives."""
        with self._cond:
            while True:
                job_id = f"job-{next(self._ids)}"
                if job_id not in self.jobs:
                    return job_id

    # --- the worker's side ----------------------------------------------------------------
    def hand_out(self, worker: str, size: int) -> list[Any]:
        """Up to ``size`` queued payloads for ``worker``, waiting up to ``long_poll_s``."""
        with self._cond:
            self._seen[worker] = time.monotonic()
            self._cond.wait_for(lambda: self._queue or self._stopping.is_set(), self.long_poll_s)
            handed: list[Any] = []
            now = time.monotonic()
            while self._queue and len(handed) < size:
                job_id, payload = self._queue.popleft()
                if job_id is not None:
                    job = self.jobs[job_id]
                    job.status, job.worker, job.taken_at = "IN_PROGRESS", worker, now
                    self.taken.append(job_id)
                handed.append(payload)
            if handed:
                self._cond.notify_all()
            return handed

    def finish(self, job_id: str, data: dict[str, Any], is_stream: bool = False) -> bool:
        """Record a job-done body (a result or a progress update); False for an unknown job."""
        with self._cond:
            job = self.jobs.get(job_id)
            if job is None:
                return False
            if data.get("status") == "IN_PROGRESS":
                self.progress.append((job_id, data.get("output")))
                job.progress.append(data.get("output"))
                if job.final:
                    self.late_progress.append(job_id)
            elif job.final:
                self.duplicates.append(job_id)
            else:
                job.final, job.output, job.error = True, data.get("output"), data.get("error")
                job.is_stream, job.done_at = is_stream, time.monotonic()
                self.results[job_id] = data
                if job.status != "CANCELLED":
                    # The platform marks a job failed only when "error" is a string.
                    job.status = "FAILED" if isinstance(job.error, str) else "COMPLETED"
            self._cond.notify_all()
            return True

    def add_chunk(self, job_id: str, output: Any) -> bool:
        """Record a job-stream post; False for an unknown job."""
        with self._cond:
            job = self.jobs.get(job_id)
            if job is None:
                return False
            job.chunks.append(output)
            self.streamed.append((job_id, output))
            if job.final:
                self.late_stream.append(job_id)
            self._cond.notify_all()
            return True

    def ping(self, worker: str, job_ids: tuple[str, ...]) -> None:
        with self._cond:
            self._seen[worker] = time.monotonic()
            self.pings.append((worker, job_ids))
            self._cond.notify_all()

    def stops_for(self, worker: str) -> list[str]:
        """The jobs ``worker`` must stop, waiting up to ``long_poll_s`` for one."""
        with self._cond:
            self._seen[worker] = time.monotonic()
            self._cond.wait_for(
                lambda: self._stops.get(worker) or self._stopping.is_set(), self.long_poll_s
            )
            self._seen[worker] = time.monotonic()
            return self._stops.pop(worker, [])

    def terminate(self, pod_id: str) -> None:
        with self._cond:
            self.terminations.append(pod_id)
            self._cond.notify_all()

    # --- the client's side ----------------------------------------------------------------
    def cancel(self, job_id: str) -> str | None:
        """Cancel a job: a queued one is dropped, a running one is sent to its worker's
        job-stop poll. Returns the job's status, None for an unknown job."""
        with self._cond:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            if not job.final and job.status in ("IN_QUEUE", "IN_PROGRESS"):
                if job.status == "IN_QUEUE":
                    self._queue = collections.deque(e for e in self._queue if e[0] != job_id)
                elif job.worker is not None:
                    self._stops.setdefault(job.worker, []).append(job_id)
                job.status = "CANCELLED"
                self._cond.notify_all()
            return job.status

    def retry(self, job_id: str) -> str | None:
        """Queue a FAILED or TIMED_OUT job again, as it was submitted (any other is left as
        it is). Returns the status it had, None for an unknown job."""
        with self._cond:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            if job.status in RETRYABLE:
                self.jobs[job_id] = FakeJob(job_id, job.payload)
                self.results.pop(job_id, None)
                self.retried.append(job_id)
                self._queue.append((job_id, job.payload))
                self._cond.notify_all()
            return job.status

    def purge(self) -> int:
        """Drop every queued job (each becomes CANCELLED); returns how many."""
        with self._cond:
            removed = 0
            for job_id, _payload in self._queue:
                removed += 1
                if job_id is not None:
                    self.jobs[job_id].status = "CANCELLED"
            self._queue.clear()
            self._cond.notify_all()
            return removed

    def status(self, job_id: str, *, full: bool = False) -> dict[str, Any] | None:
        """``{"id", "status"[, "output" | "error"]}``, None for an unknown job. ``full``: as
        ``GET /status`` answers, with ``delayTime``, ``executionTime`` and ``workerId`` once
        taken, and the last progress update as ``output`` while IN_PROGRESS."""
        with self._cond:
            job = self.jobs.get(job_id)
            return None if job is None else _status_view(job, time.monotonic(), full)

    def wait_final(self, job_id: str, timeout: float) -> None:
        """Wait until the job has a final status (or ``timeout`` s, or the server stops)."""
        with self._cond:
            self._cond.wait_for(
                lambda: self.jobs[job_id].status in FINAL or self._stopping.is_set(), timeout
            )

    def stream_since(self, job_id: str) -> dict[str, Any] | None:
        """``{"status", "stream": [{"output": chunk}, ...]}``: the chunks not handed out yet."""
        with self._cond:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            fresh = job.chunks[job.chunks_read:]
            job.chunks_read = len(job.chunks)
            # a chunk posted after the status turned final still goes out before the end
            return {"status": job.status, "stream": [{"output": c} for c in fresh]}

    def health(self) -> dict[str, Any]:
        """Jobs by status and workers seen lately, idle or running, as ``GET /health``."""
        with self._cond:
            counts = collections.Counter(job.status for job in self.jobs.values())
            cutoff = time.monotonic() - WORKER_SEEN_S
            busy = {j.worker for j in self.jobs.values() if j.status == "IN_PROGRESS"}
            seen = {w for w, at in self._seen.items() if at >= cutoff} | busy
            return {
                "jobs": {
                    "completed": counts["COMPLETED"],
                    "failed": counts["FAILED"] + counts["TIMED_OUT"],
                    "inProgress": counts["IN_PROGRESS"],
                    "inQueue": len(self._queue),
                    "retried": len(self.retried),
                },
                "workers": {"idle": len(seen - busy), "running": len(busy)},
            }

    # --- waiting ------------------------------------------------------------------------
    def wait_until(self, predicate: Callable[[Self], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate(self)`` holds (checked on every change) or ``timeout`` s."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def wait_for_results(self, count: int, timeout: float = 5.0) -> bool:
        return self.wait_until(lambda s: len(s.results) >= count, timeout)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _status_view(job: FakeJob, now: float, full: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {"id": job.id, "status": job.status}
    if full and job.taken_at is not None:
        ended = now if job.done_at is None else job.done_at
        answer["delayTime"] = _ms(job.taken_at - job.queued_at)
        answer["executionTime"] = _ms(ended - job.taken_at)
        answer["workerId"] = job.worker
    if job.final:
        if job.error is not None:
            answer["error"] = job.error
        else:
            answer["output"] = job.output
    elif full and job.status == "IN_PROGRESS" and job.progress:
        answer["output"] = job.progress[-1]
    return answer
