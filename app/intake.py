"""The intake: asks the job API for work on a thread of its own.

A take is a long-poll: the server may hold it for a minute and more. Done on the controller's
thread, it would leave a SIGTERM waiting that long (longer than the platform waits before
SIGKILL). Here the controller hands the request over and waits on its own event, so a stop
request is seen at once; a take still pending then gets a short grace to answer (jobs it brings
are run, not dropped) and is otherwise abandoned: the platform hands a job that no worker
acknowledged to another worker.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from domain.job import Job
from domain.ports import JobApi

Outcome = tuple[list[Job], BaseException | None]


class Intake:
    """One daemon thread running ``job_api.take`` on request; ``on_done`` is called after each."""

    def __init__(self, job_api: JobApi, on_done: Callable[[], None]) -> None:
        self._api = job_api
        self._on_done = on_done
        self._requests: queue.Queue[bool | None] = queue.Queue()
        self._lock = threading.Lock()
        self._outcome: Outcome | None = None
        self._thread = threading.Thread(target=self._run, name="intake", daemon=True)
        self._thread.start()
        self.pending = False

    def request(self, *, job_in_progress: bool) -> None:
        """Start one take; its outcome is then read with ``collect``."""
        self.pending = True
        self._requests.put(job_in_progress)

    def collect(self) -> Outcome | None:
        """The finished take's jobs and error (None while it is still running)."""
        with self._lock:
            outcome, self._outcome = self._outcome, None
        if outcome is not None:
            self.pending = False
        return outcome

    def stop(self) -> None:
        self._requests.put(None)

    def _run(self) -> None:
        while True:
            job_in_progress = self._requests.get()
            if job_in_progress is None:
                return
            try:
                outcome: Outcome = (self._api.take(job_in_progress=job_in_progress), None)
            except BaseException as exc:  # handed to the controller, which decides
                outcome = ([], exc)
            with self._lock:
                self._outcome = outcome
            self._on_done()
