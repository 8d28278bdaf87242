"""The controller's books: every job the worker holds, from the take to the delivered result.

Why it exists: counting "undelivered" per job id broke when the platform handed out one id
twice (the count never went back to zero, pings named the job forever, the idle TTL never
fired). Here each job id is held at most once, in exactly one place:

    queued ──start──► running ──finish──► undelivered ──delivered──► (gone)
       └────────────── decide (answered without the model) ──┘

A job whose id is already held when it is taken again is a **duplicate**: it is not queued (its
first copy's result will answer that id, once), and ``take`` says so, so the caller can log it.
An id taken again *after* its result was delivered is a new job and runs again.

Pure and single-threaded: only the controller's thread touches a ``Ledger``.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from domain.execution import RunningJob
from domain.job import Job

EARLY_STOPS_KEPT = 256


class Ledger:
    """Jobs queued, running and awaiting delivery, each id once."""

    def __init__(self) -> None:
        self._queued: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self.running: dict[str, RunningJob] = {}
        self._undelivered: dict[str, None] = {}  # ordered set
        # job-stop requests for ids not held (yet): the take's answer may still be on its way
        self._early_stops: collections.deque[str] = collections.deque(maxlen=EARLY_STOPS_KEPT)

    # --- what the policy observes -------------------------------------------------------
    @property
    def queued(self) -> int:
        return len(self._queued)

    @property
    def undelivered(self) -> int:
        return len(self._undelivered)

    def holds(self, job_id: str) -> bool:
        return job_id in self._queued or job_id in self.running or job_id in self._undelivered

    def in_flight_ids(self) -> tuple[str, ...]:
        """Every id held, each once, running jobs first: what a heartbeat reports."""
        return (*self.running, *self._queued, *self._undelivered)

    def undelivered_ids(self) -> tuple[str, ...]:
        return tuple(self._undelivered)

    # --- transitions ----------------------------------------------------------------------
    def take(self, job: Job) -> bool:
        """Queue a job just taken; False (and nothing queued) when its id is already held."""
        if self.holds(job.id):
            return False
        self._queued[job.id] = job
        return True

    def next_queued(self) -> Job | None:
        """Remove and return the oldest queued job."""
        if not self._queued:
            return None
        return self._queued.popitem(last=False)[1]

    def start(self, running: RunningJob) -> None:
        self.running[running.job_id] = running

    def finish(self, job_id: str, running: RunningJob) -> bool:
        """The model is done with ``running``: True when it was still running here (its outcome
        counts), False when the worker had already given up on it (its outcome is dropped)."""
        if self.running.get(job_id) is not running:
            return False
        del self.running[job_id]
        self._undelivered[job_id] = None
        return True

    def answered_without_model(self, job_id: str) -> None:
        """A result was decided for ``job_id`` without running it (bad input, cancelled, the
        poison-job guard, recovered from the outbox): it now awaits delivery."""
        self._queued.pop(job_id, None)
        self.running.pop(job_id, None)
        self._undelivered[job_id] = None

    def delivered(self, job_id: str) -> None:
        """The job API accepted the result of ``job_id`` (or refused it for good)."""
        self._undelivered.pop(job_id, None)

    def cancel_queued(self, job_id: str) -> Job | None:
        """Remove ``job_id`` from the queue when it is waiting there."""
        return self._queued.pop(job_id, None)

    # --- job-stop requests that overtook their job --------------------------------------
    def remember_stop(self, job_id: str) -> None:
        self._early_stops.append(job_id)

    def stop_requested_early(self, job_id: str) -> bool:
        return job_id in self._early_stops

    def recovered(self, job_ids: Iterable[str]) -> None:
        """Results kept from an earlier process await delivery."""
        for job_id in job_ids:
            self._undelivered[job_id] = None
