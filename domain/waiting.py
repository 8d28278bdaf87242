"""Every wait-and-retry schedule podworker uses, named in one place, and their bookkeeping.

Why one module: a down job API, a refused result, a flaky bucket and a pod that will not
terminate each need a different pace, and scattered constants drifted apart (the README once
promised "8 tries in 25 s" for results while the code made 4 in 10 s). Each schedule is a
frozen value; :class:`Backoff` is the pure bookkeeping a stage keeps while it retries (no
clock, no sleeping: the caller waits on its own stop event, so every wait is interruptible).

========================  ========  =========  ========  =================================
schedule                  first     doubling   attempts  used for
                          wait (s)  to (s)     / within
========================  ========  =========  ========  =================================
``TAKE``                  0.25      5          forever   take failing (API down, 5xx, 429)
``JOB_STOPS``             0.5       10         forever   job-stop long-poll failing
``RESULT_POST``           0.2       30         forever   a result the API has not accepted
``STORAGE_UPLOAD``        0.2       5          5 / 30 s  one output upload
``POD_CONTROL``           1         15         5 / 60 s  the pod-termination call
``BEST_EFFORT``           0.1       0.5        2 / 2 s   pings and progress updates
========================  ========  =========  ========  =================================

``Retry-After`` from a server is honoured (never waiting less than it asked, at most 60 s).
``MIN_POLL_INTERVAL`` keeps a server that answers "no job" at once from being hammered.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

MIN_POLL_INTERVAL = 0.2
"""An empty take or job-stop answer that came back faster than this is followed by a pause."""

RETRY_AFTER_CAP = 60.0
"""The longest ``Retry-After`` honoured (seconds): a server cannot park the worker for hours."""


@dataclass(frozen=True)
class Schedule:
    """Exponential backoff with jitter, optionally bounded in attempts and total time."""

    name: str
    initial: float
    maximum: float
    attempts: int | None = None  # None: retry for as long as it takes
    within_s: float | None = None
    jitter: float = 0.2  # each delay varies by up to this fraction, either way

    def delay(
        self,
        failures: int,
        rng: Callable[[], float] = random.random,
        retry_after: float | None = None,
    ) -> float:
        """The wait after the ``failures``-th consecutive failure (1 = the first): never less
        than a server's ``retry_after`` asked, up to :data:`RETRY_AFTER_CAP`."""
        base = min(self.maximum, self.initial * 2.0 ** min(max(failures - 1, 0), 30))
        delay = base * (1 + self.jitter * (2 * rng() - 1))
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
        return delay

    def scaled(self, factor: float) -> Schedule:
        """This schedule with every wait and bound multiplied by ``factor`` (tests run fault
        scenarios in a tenth of the time without changing their shape)."""
        return replace(
            self, initial=self.initial * factor, maximum=self.maximum * factor,
            within_s=None if self.within_s is None else self.within_s * factor,
        )


TAKE = Schedule("take", initial=0.25, maximum=5.0)
JOB_STOPS = Schedule("job_stops", initial=0.5, maximum=10.0)
RESULT_POST = Schedule("result_post", initial=0.2, maximum=30.0)
STORAGE_UPLOAD = Schedule("storage_upload", initial=0.2, maximum=5.0, attempts=5, within_s=30)
POD_CONTROL = Schedule("pod_control", initial=1.0, maximum=15.0, attempts=5, within_s=60)
BEST_EFFORT = Schedule("best_effort", initial=0.1, maximum=0.5, attempts=2, within_s=2)


class Backoff:
    """Consecutive failures of one activity and the wait each calls for.

    ``failed()`` after a failure returns how long to wait (honouring ``retry_after``);
    ``succeeded()`` resets it. Pure: the caller owns the clock and the waiting.
    """

    def __init__(self, schedule: Schedule, rng: Callable[[], float] = random.random) -> None:
        self.schedule = schedule
        self._rng = rng
        self.failures = 0

    def failed(self, retry_after: float | None = None) -> float:
        self.failures += 1
        return self.schedule.delay(self.failures, self._rng, retry_after)

    def succeeded(self) -> None:
        self.failures = 0
