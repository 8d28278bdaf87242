"""The job-stop poller: long-polls the platform's job-stop requests and tells the controller.

It runs from start to close, also while the worker drains after SIGTERM (a job still running
may be stopped then). Every pause — after a failed poll (``domain.waiting.JOB_STOPS``) or an
empty answer that came back at once (``MIN_POLL_INTERVAL``) — waits on its own ``closed``
event, never on the stop request (which is already set while draining and would turn the pause
into a spin).
"""

from __future__ import annotations

import logging
import threading

from app.messages import Inbox, StopJob
from domain import waiting
from domain.ports import Clock, JobStopSource

log = logging.getLogger("podworker.job_stops")


class JobStops:
    """One daemon thread turning job-stop requests into ``StopJob`` messages."""

    def __init__(self, source: JobStopSource, clock: Clock, inbox: Inbox) -> None:
        self._source = source
        self._clock = clock
        self._inbox = inbox
        self._closed = threading.Event()
        self._backoff = waiting.Backoff(waiting.JOB_STOPS)
        self._thread = threading.Thread(target=self._run, name="job-stops", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._closed.set()

    def _run(self) -> None:
        while not self._closed.is_set():
            started = self._clock.now()
            try:
                ids = self._source.jobs_to_stop()
            except Exception as exc:
                self._closed.wait(self._backoff.failed(getattr(exc, "retry_after", None)))
                continue
            self._backoff.succeeded()
            for job_id in ids:
                self._inbox.put(StopJob(job_id))
            if not ids:
                elapsed = self._clock.now() - started
                if elapsed < waiting.MIN_POLL_INTERVAL:
                    self._closed.wait(waiting.MIN_POLL_INTERVAL - elapsed)
