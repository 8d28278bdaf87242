"""The heartbeat: a thread that pings the job API every interval with the jobs in flight.

A failed ping never stops the next one (the adapter swallows errors, and so does this loop;
every ping ends by the adapter's deadline, so a server that trickles cannot stall it). The wait
between pings is ``closed.wait(interval)``, so closing is immediate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from domain.ports import JobApi

log = logging.getLogger("podworker.heartbeat")


class Heartbeat:
    """Calls ``job_api.ping(in_flight())`` at once, then every ``interval_s`` until stopped."""

    def __init__(
        self, job_api: JobApi, interval_s: float, in_flight: Callable[[], Sequence[str]]
    ) -> None:
        self._api = job_api
        self._interval = interval_s
        self._in_flight = in_flight
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                self._api.ping(list(self._in_flight()))
            except Exception:  # a ping must never end the heartbeat
                log.debug("ping failed", exc_info=True)
            self._closed.wait(self._interval)
