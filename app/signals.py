"""SIGTERM/SIGINT: the first asks the worker to stop gracefully, the second stops at once.

A graceful stop takes no new job, lets the job in flight finish (bounded by its timeout),
delivers every result (bounded by SHUTDOWN_GRACE) and exits 0. A second signal exits with 130
straight away: results not yet delivered stay in the outbox and are sent at the next start.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("podworker.signals")


def install_stop_handlers(request_stop: Callable[[str], None]) -> None:
    """Route SIGTERM and SIGINT to ``request_stop``; a second one ends the process (130)."""
    received: list[str] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received:
            log.warning("%s again: stopping now; undelivered results stay in the outbox", name,
                        extra={"event": "forced_exit"})
            logging.shutdown()
            os._exit(130)
        received.append(name)
        request_stop(f"{name} received")

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
