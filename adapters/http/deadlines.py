"""Overall deadlines for HTTP requests: one watchdog thread that cuts a request's connection
when its deadline passes.

Why a watchdog: a socket timeout bounds each read, not the whole answer, so a server that sends
one byte a second holds a request forever; and under TLS the timeout cannot be changed between
the reads of one request. Shutting the socket down from another thread wakes the blocked read
at once, plain or TLS. :mod:`adapters.http.client` arms a :class:`Guard` per request and marks
it done when the request ends; a done guard costs nothing but a heap entry until its deadline.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from typing import Any


class Guard:
    """One request's deadline, and the connection to cut when it passes."""

    __slots__ = ("conn", "deadline", "done", "expired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: Any = None
        self.done = False
        self.expired = False

    def cut(self) -> None:
        self.expired = True
        sock = getattr(self.conn, "sock", None)
        if sock is not None:
            # the plain socket's shutdown: it wakes a read blocked in TLS code as well
            with contextlib.suppress(OSError, TypeError, ValueError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that cuts the connections of requests past their deadline."""

    RECHECK_S = 0.25  # a cut request not yet connected is cut again until it ends

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Guard]] = []
        self._cond = threading.Condition()
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, guard: Guard) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http-deadlines",
                                                daemon=True)
                self._thread.start()
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (guard.deadline, next(self._order), guard))
            if earliest is None or guard.deadline < earliest:
                self._cond.notify()

    def expire(self, guard: Guard) -> None:
        """Cut ``guard``'s request now, as if its deadline had passed (a cancelled job's)."""
        with self._cond:
            if guard.done:
                return
            heapq.heappush(self._heap, (time.monotonic(), next(self._order), guard))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _, guard = self._heap[0]
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heapreplace(self._heap, (deadline + self.RECHECK_S, next(self._order), guard))
            guard.cut()


WATCHDOG = _Watchdog()
