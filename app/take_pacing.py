"""When the controller may ask for work again: the take backoff, and its log lines.

Owned by the controller's thread. A failed take (API down, 5xx, 429, an answer cut at its
deadline) pushes the next one back on ``domain.waiting.TAKE`` (0.25 s doubling to 5 s,
``Retry-After`` honoured); an empty answer that came back at once (a server that does not
long-poll) waits ``MIN_POLL_INTERVAL``. A dead API is logged once, then every 30 s, and its
recovery once, instead of a line per try.
"""

from __future__ import annotations

import logging

from domain import waiting
from domain.errors import TransientError
from domain.outputs import describe_error

log = logging.getLogger("podworker.worker")

LOG_EVERY_S = 30.0


class TakePacer:
    """``allowed_at``: the clock time before which no take is made."""

    def __init__(self, min_poll_interval_s: float = waiting.MIN_POLL_INTERVAL) -> None:
        self._min_interval = min_poll_interval_s
        self._backoff = waiting.Backoff(waiting.TAKE)
        self._logged_at: float | None = None
        self.allowed_at = 0.0

    def failed(self, error: BaseException, now: float) -> None:
        if not isinstance(error, TransientError):  # an adapter bug must not end the worker
            log.error("take failed unexpectedly: %s", describe_error(error),
                      extra={"event": "take_bug"})
        self.allowed_at = now + self._backoff.failed(getattr(error, "retry_after", None))
        if self._logged_at is None or now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning("cannot take jobs (%s); retrying with backoff (%d failure(s) so far)",
                        describe_error(error), self._backoff.failures,
                        extra={"event": "take_failed"})

    def answered(self, *, started: float, now: float, empty: bool) -> None:
        if self._backoff.failures:
            log.info("job API reachable again", extra={"event": "api_recovered"})
        self._backoff.succeeded()
        self._logged_at = None
        if empty and now - started < self._min_interval:  # not long-polled: pause
            self.allowed_at = started + self._min_interval
