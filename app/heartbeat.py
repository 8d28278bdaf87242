"""The heartbeat: a thread that pings the job API every interval with the jobs in flight.

A failed ping never stops the next one (the adapter swallows errors, and so does this loop).
The wait between pings is ``stop.wait(interval)``, so stopping is immediate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from domain.ports import JobApi

log = logging.getLogger("podworker.heartbeat")


class Heartbeat:
    """Calls ``job_api.ping(in_flight())`` at once, then every ``interval_s`` until stopped."""

    def __init__(
        self, job_api: JobApi, interval_s: float, in_flight: Callable[[], list[str]]
    ) -> None:
        self._api = job_api
        self._interval = interval_s
        self._in_flight = in_flight
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self.beats = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._api.ping(self._in_flight())
                self.beats += 1
            except Exception:  # a ping must never end the heartbeat
                log.debug("ping failed", exc_info=True)
            self._stop.wait(self._interval)
