"""Signals: SIGTERM, SIGHUP and SIGINT ask the worker to stop gracefully; only a deliberate second
interrupt (Ctrl-C again, or SIGQUIT) stops it at once.

- The first SIGTERM, SIGINT or SIGHUP (the terminal or session went away: its default action
  would kill the process with no log line and no delivery) asks for a graceful stop: no new
  job, the job in flight finishes (bounded by its timeout), every result is delivered (bounded
  by SHUTDOWN_GRACE), exit 0.
- **A repeated SIGTERM or SIGHUP is logged and ignored**: supervisors that send SIGTERM again
  while waiting must not turn a drain into lost work (the platform's SIGKILL ends it anyway).
- A SIGINT once a stop is under way (Ctrl-C twice), or SIGQUIT at any time (Ctrl-\\), stops at
  once with exit code 130: results already written down stay in the outbox and are sent at the
  next start (jobs still running or storing outputs are not finished).
- **Before the worker exists** (imports, settings, building the model, opening the outbox and
  its start-up compaction), the first stop signal raises :class:`StopBeforeStart` in the main
  thread, which unwinds whatever start-up was doing (the compaction removes its temporary copy
  on the way); the command line logs it and exits 0.

The handlers take no lock: Python runs them on the main thread between two bytecodes, possibly
while that thread holds a lock the stop request needs (a queue's, an event's, the logging
module's), so the stop request, and any log line, is handed to a short-lived thread of its own.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("podworker.signals")

GRACEFUL = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
FORCED_EXIT = 130


class StopBeforeStart(BaseException):
    """A stop signal arrived before the worker was built: start-up is abandoned, exit 0.

    A ``BaseException``, so that no ``except Exception`` in start-up code swallows it."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"{signal_name} received during start-up")
        self.signal_name = signal_name


class StopSignals:
    """The process's stop-signal handlers; ``connect`` hands stop requests to the worker."""

    def __init__(self) -> None:
        self._received: list[str] = []
        self._request_stop: Callable[[str], None] | None = None
        self.installed = False

    def install(self) -> StopSignals:
        """Take over SIGTERM, SIGINT, SIGHUP and SIGQUIT (main thread only)."""
        for signum in (*GRACEFUL, signal.SIGQUIT):
            signal.signal(signum, self._handle)
        self.installed = True
        return self

    def connect(self, request_stop: Callable[[str], None]) -> None:
        """From now on a stop signal calls ``request_stop(reason)`` (on a thread of its own).
        A stop that came during start-up and was not acted on (start-up code swallowed the
        ``StopBeforeStart``) is requested now."""
        self._request_stop = request_stop
        if self._received:
            request_stop(f"{self._received[0]} received during start-up")

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGQUIT or (signum == signal.SIGINT and self._received):
            again = " again" if self._received else ""
            os.write(2, f"{name}{again}: stopping now; results already written down stay in "
                        "the outbox and are sent at the next start (jobs still running or "
                        "storing outputs are not finished)\n".encode())
            os._exit(FORCED_EXIT)
        first = not self._received
        self._received.append(name)
        if self._request_stop is None:  # still starting: abandon start-up
            if first:
                raise StopBeforeStart(name)
            return
        if first:
            target: Callable[[], None] = lambda: self._stop(f"{name} received")  # noqa: E731
        else:
            target = lambda: _ignored(name)  # noqa: E731
        threading.Thread(target=target, name="stop-request", daemon=True).start()

    def _stop(self, reason: str) -> None:
        assert self._request_stop is not None
        self._request_stop(reason)


def _ignored(name: str) -> None:
    log.warning("%s again while stopping: ignored, the drain goes on (Ctrl-C again or SIGQUIT "
                "stops at once: results already written down stay in the outbox, jobs still "
                "running or storing outputs are not finished)", name,
                extra={"event": "stop_signal_ignored"})


SIGNALS = StopSignals()
"""The one set of handlers a process has."""


def install_early() -> None:
    """Handle stop signals from the very start of ``run`` (see ``StopBeforeStart``)."""
    SIGNALS.install()


def install_stop_handlers(request_stop: Callable[[str], None]) -> None:
    """Route stop signals to ``request_stop`` (installing the handlers when not yet done)."""
    if not SIGNALS.installed:
        SIGNALS.install()
    SIGNALS.connect(request_stop)
