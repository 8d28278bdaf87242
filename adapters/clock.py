"""Clocks: the system's monotonic clock, and a manual one for tests.

``SystemClock`` is the only code in podworker that reads the time for decisions. It reads
``time.monotonic`` (never the wall clock, which can jump), which freezegun also controls.
"""

from __future__ import annotations

import threading
import time


class SystemClock:
    """Monotonic seconds from the operating system."""

    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when a test says so. Thread-safe."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
