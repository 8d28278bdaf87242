"""Retry policies: bounded, jittered, honouring Retry-After, never sleeping in tests."""

from __future__ import annotations

import pytest

from adapters import retrying
from adapters.retrying import Backoff
from domain.errors import ApiUnavailable, RateLimited, RejectedByApi


def test_backoff_doubles_up_to_its_maximum_and_resets_after_success() -> None:
    backoff = Backoff(initial=0.25, maximum=5.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(7)] == [0.25, 0.5, 1, 2, 4, 5, 5]
    backoff.reset()
    assert backoff.next_delay() == 0.25


def test_backoff_jitter_stays_within_its_fraction() -> None:
    low = Backoff(initial=1, maximum=1, jitter=0.2, rng=lambda: 0.0)
    high = Backoff(initial=1, maximum=1, jitter=0.2, rng=lambda: 1.0)
    assert low.next_delay() == pytest.approx(0.8)
    assert high.next_delay() == pytest.approx(1.2)


def test_backoff_waits_at_least_what_retry_after_asked_for() -> None:
    backoff = Backoff(initial=0.25, maximum=5.0, jitter=0.0)
    assert backoff.next_delay(retry_after=3) == 3
    assert backoff.next_delay(retry_after=3600) == 60  # capped: never park for an hour


def test_a_dead_api_sees_few_requests_in_30_seconds() -> None:
    backoff = Backoff(initial=0.25, maximum=5.0)
    spent, attempts = 0.0, 0
    while spent < 30:
        spent += backoff.next_delay()
        attempts += 1
    assert attempts <= 15


def test_result_delivery_retries_transient_errors_then_gives_up_with_the_last_one() -> None:
    waits: list[float] = []
    calls = []

    def post() -> None:
        calls.append(1)
        raise ApiUnavailable("job API answered 503")

    with pytest.raises(ApiUnavailable):
        for attempt in retrying.result_delivery(sleep=waits.append):
            with attempt:
                post()
    assert len(calls) == 4
    assert len(waits) == 3 and all(0 < w <= 5.5 for w in waits)


def test_permanent_errors_are_not_retried() -> None:
    calls = []
    with pytest.raises(RejectedByApi):
        for attempt in retrying.result_delivery(sleep=lambda s: None):
            with attempt:
                calls.append(1)
                raise RejectedByApi("404")
    assert calls == [1]


def test_retry_after_is_honoured_by_the_policies() -> None:
    waits: list[float] = []
    attempts = iter([RateLimited("429", retry_after=7), None])
    for attempt in retrying.result_delivery(sleep=waits.append):
        with attempt:
            exc = next(attempts)
            if exc is not None:
                raise exc
    assert waits and waits[0] >= 7
