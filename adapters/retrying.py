"""Bounded retries for adapters, built from the schedules named in :mod:`domain.waiting`.

``retrying(schedule)`` returns a fresh ``tenacity.Retrying``: jittered exponential backoff, at
most ``schedule.attempts`` tries within ``schedule.within_s``, retrying only
``TransientError`` (adapters translate connection errors, 5xx and 429 into it first), waiting at
least what a server's ``Retry-After`` asked.

Every wait is interruptible: given ``interrupt`` (the worker's stop event), a retry sleeps on
it, and once it is set no further attempt is made (the last error is raised), so a stop request
never waits behind a retry loop. Tests pass ``sleep=`` (a recorder) and never sleep for real.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
)

from domain.errors import TransientError
from domain.waiting import Schedule

Sleep = Callable[[float], object]


def _wait(schedule: Schedule) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        asked = float(retry_after) if isinstance(retry_after, int | float) else None
        return schedule.delay(state.attempt_number, retry_after=asked)

    return wait


def retrying(
    schedule: Schedule,
    *,
    interrupt: threading.Event | None = None,
    sleep: Sleep | None = None,
) -> Retrying:
    """A fresh retry loop following ``schedule`` (see the module docstring)."""
    stop: Any = stop_never
    if schedule.attempts is not None:
        stop = stop_after_attempt(schedule.attempts)
    if schedule.within_s is not None:
        stop = stop | stop_after_delay(schedule.within_s)
    if interrupt is not None:
        event = interrupt
        stop = stop | (lambda state: event.is_set())
    kwargs: dict[str, Any] = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    elif interrupt is not None:
        kwargs["sleep"] = interrupt.wait
    return Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop,
        wait=_wait(schedule),
        reraise=True,
        **kwargs,
    )
