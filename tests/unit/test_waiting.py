"""The named schedules and their bookkeeping, and the retry loops built from them."""

from __future__ import annotations

import threading

import pytest

from adapters.retrying import retrying
from domain import waiting
from domain.errors import ApiUnavailable, RateLimited, RejectedByApi
from domain.waiting import Backoff, Schedule


def test_backoff_doubles_up_to_its_maximum_and_resets_after_success() -> None:
    backoff = Backoff(Schedule("t", initial=0.25, maximum=1.0, jitter=0.0))
    assert [backoff.failed() for _ in range(5)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    backoff.succeeded()
    assert backoff.failed() == 0.25


def test_backoff_jitter_stays_within_its_fraction() -> None:
    low = Backoff(Schedule("t", initial=1.0, maximum=1.0, jitter=0.2), rng=lambda: 0.0)
    high = Backoff(Schedule("t", initial=1.0, maximum=1.0, jitter=0.2), rng=lambda: 1.0)
    assert low.failed() == pytest.approx(0.8) and high.failed() == pytest.approx(1.2)


def test_backoff_waits_at_least_what_retry_after_asked_for_but_never_hours() -> None:
    backoff = Backoff(waiting.TAKE)
    assert backoff.failed(retry_after=7) >= 7
    assert backoff.failed(retry_after=10_000) == waiting.RETRY_AFTER_CAP


def test_a_dead_api_sees_few_takes_in_30_seconds() -> None:
    backoff = Backoff(waiting.TAKE)
    spent, attempts = 0.0, 0
    while spent < 30:
        spent += backoff.failed()
        attempts += 1
    assert attempts <= 15


def test_a_bounded_schedule_retries_transient_errors_then_gives_up_with_the_last_one() -> None:
    waits: list[float] = []
    calls = []
    with pytest.raises(ApiUnavailable):
        for attempt in retrying(waiting.STORAGE_UPLOAD, sleep=waits.append):
            with attempt:
                calls.append(1)
                raise ApiUnavailable("answered 503")
    assert len(calls) == waiting.STORAGE_UPLOAD.attempts
    assert len(waits) == len(calls) - 1 and all(0 < w <= 6 for w in waits)


def test_permanent_errors_are_not_retried() -> None:
    calls = []
    with pytest.raises(RejectedByApi):
        for attempt in retrying(waiting.POD_CONTROL, sleep=lambda s: None):
            with attempt:
                calls.append(1)
                raise RejectedByApi("404")
    assert calls == [1]


def test_retry_after_is_honoured_by_the_retry_loops() -> None:
    waits: list[float] = []
    outcomes = iter([RateLimited("429", retry_after=7), None])
    for attempt in retrying(waiting.POD_CONTROL, sleep=waits.append):
        with attempt:
            exc = next(outcomes)
            if exc is not None:
                raise exc
    assert waits and waits[0] >= 7


def test_a_stop_request_ends_a_retry_loop_at_once_with_the_last_error() -> None:
    interrupt = threading.Event()
    calls = []

    def fail() -> None:
        calls.append(1)
        interrupt.set()  # the stop request arrives while the first attempt runs
        raise ApiUnavailable("answered 503")

    with pytest.raises(ApiUnavailable):
        for attempt in retrying(waiting.POD_CONTROL, interrupt=interrupt):
            with attempt:
                fail()
    assert calls == [1]
