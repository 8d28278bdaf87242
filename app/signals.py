"""SIGTERM, SIGINT and SIGHUP: the first asks the worker to stop gracefully, a second stops at once.

SIGHUP (the terminal or session went away) is treated like SIGTERM: its default action would
kill the process with no log line and no delivery.

A graceful stop takes no new job, lets the job in flight finish (bounded by its timeout),
delivers every result (bounded by SHUTDOWN_GRACE) and exits 0. A second signal exits with 130
straight away: results not yet delivered stay in the outbox and are sent at the next start.

The handler itself takes no lock: Python runs it on the main thread between two bytecodes,
possibly while that thread holds a lock the stop request needs (a queue's, an event's), so the
stop request is handed to a short-lived thread of its own.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType


def install_stop_handlers(request_stop: Callable[[str], None]) -> None:
    """Route SIGTERM, SIGINT and SIGHUP to ``request_stop``; a second one ends the process
    (130)."""
    received: list[str] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received:
            os.write(2, f"{name} again: stopping now; undelivered results stay in the outbox "
                        "and are sent at the next start\n".encode())
            os._exit(130)
        received.append(name)
        threading.Thread(
            target=request_stop, args=(f"{name} received",), name="stop-request", daemon=True
        ).start()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, handle)
