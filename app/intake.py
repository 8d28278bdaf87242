"""The intake: asks the job API for work on a thread of its own.

A take is a long-poll: the server may hold it for a minute and more. Done on the controller's
thread it would leave a SIGTERM waiting that long (longer than the platform waits before
SIGKILL). Here the controller asks (``request``) and goes on; the answer arrives on its inbox as
:class:`~app.messages.Taken`. A take that is still out when the worker stops is simply not
waited for past the policy's ``take_grace``: the platform hands a job that no worker
acknowledged to another worker. Every take ends by the adapter's overall deadline.
"""

from __future__ import annotations

import queue
import threading

from app.messages import Inbox, Taken
from domain.ports import Clock, JobApi


class Intake:
    """One daemon thread running ``job_api.take`` on request."""

    def __init__(self, job_api: JobApi, clock: Clock, inbox: Inbox) -> None:
        self._api = job_api
        self._clock = clock
        self._inbox = inbox
        self._requests: queue.SimpleQueue[tuple[bool, int] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="intake", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request(self, *, job_in_progress: bool, max_jobs: int) -> None:
        """Start one take; its outcome comes back as ``Taken``."""
        self._requests.put((job_in_progress, max_jobs))

    def stop(self) -> None:
        self._requests.put(None)

    def _run(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            job_in_progress, max_jobs = request
            started = self._clock.now()
            try:
                jobs = self._api.take(job_in_progress=job_in_progress, max_jobs=max_jobs)
                message = Taken(jobs, None, started)
            except BaseException as exc:  # handed to the controller, which decides
                message = Taken([], exc, started)
            self._inbox.put(message)
