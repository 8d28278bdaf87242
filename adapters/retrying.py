"""The retry policies, declared once and shared by every adapter.

Each policy is a function returning a fresh ``tenacity.Retrying``: bounded (attempts and
total time), jittered exponential backoff, retrying only ``TransientError`` (connection errors,
5xx, 429: adapters translate those into ``domain.errors.TransientError`` first). A server's
``Retry-After`` is honoured: the wait is at least what it asked for.

- ``result_delivery``: terminal results: a short burst (4 attempts within 10 s) for a blip. A
  result that outlives it is not dropped: it sits in the outbox and the worker's delivery stage
  sends it again with its own backoff (1 s doubling to 30 s, for as long as it takes), so a long
  outage never holds the next results in memory for long.
- ``storage_upload``: one object upload.
- ``pod_control``: the pod-termination call.
- ``best_effort``: heartbeats and progress updates: one quick retry, then give up quietly.

Tests pass ``sleep=`` (a recorder, or ``lambda s: None``) so they never sleep for real.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from domain.errors import TransientError

Sleep = Callable[[float], object]


def _wait_honouring_retry_after(
    initial: float, maximum: float
) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)

    def wait(state: RetryCallState) -> float:
        delay = backoff(state)
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > 0:
            delay = max(delay, min(float(retry_after), 60.0))
        return delay

    return wait


def _policy(
    *, attempts: int, within_s: float, initial: float, maximum: float, sleep: Sleep | None
) -> Retrying:
    kwargs: dict[str, Any] = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    return Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(attempts) | stop_after_delay(within_s),
        wait=_wait_honouring_retry_after(initial, maximum),
        reraise=True,
        **kwargs,
    )


def result_delivery(sleep: Sleep | None = None) -> Retrying:
    """Final results: up to 4 attempts within 10 s, 0.2 s doubling to 5 s (then the outbox)."""
    return _policy(attempts=4, within_s=10, initial=0.2, maximum=5, sleep=sleep)


def storage_upload(sleep: Sleep | None = None) -> Retrying:
    """One upload: up to 5 attempts within 30 s, 0.2 s doubling to 5 s."""
    return _policy(attempts=5, within_s=30, initial=0.2, maximum=5, sleep=sleep)


def pod_control(sleep: Sleep | None = None) -> Retrying:
    """Pod termination: up to 5 attempts within 60 s, 1 s doubling to 15 s."""
    return _policy(attempts=5, within_s=60, initial=1, maximum=15, sleep=sleep)


def best_effort(sleep: Sleep | None = None) -> Retrying:
    """Pings and progress: two attempts within 2 s; the caller swallows the final failure."""
    return _policy(attempts=2, within_s=2, initial=0.1, maximum=0.5, sleep=sleep)


class Backoff:
    """Backoff for the take loop while the job API is down: 0.25 s doubling to ``maximum`` s.

    Pure bookkeeping (no sleeping, no clock): the worker asks ``next_delay()`` after each failure
    and calls ``reset()`` after a success, so a dead API sees at most a few requests a second.
    Each delay is jittered by up to ``jitter`` (a fraction, either way) so that many workers
    coming back after the same outage do not all ask at the same instant.
    """

    def __init__(
        self,
        initial: float = 0.25,
        maximum: float = 5.0,
        *,
        jitter: float = 0.2,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self._rng = rng
        self.failures = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        delay = min(self.maximum, self.initial * 2.0 ** min(self.failures, 30))
        delay *= 1 + self.jitter * (2 * self._rng() - 1)
        self.failures += 1
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, 60.0))
        return delay

    def reset(self) -> None:
        self.failures = 0
