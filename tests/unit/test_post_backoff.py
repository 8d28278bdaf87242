"""The result posts' backoff, shared by every posting lane: the API is down for all of them."""

from __future__ import annotations

import pytest

from adapters.clock import ManualClock
from app.posting import _SharedBackoff
from domain import waiting

SCHEDULE = waiting.Schedule("test_post", initial=0.2, maximum=30.0, jitter=0.0)


def test_lanes_failing_in_the_same_round_wait_the_same_short_wait() -> None:
    clock = ManualClock()
    backoff = _SharedBackoff(SCHEDULE, clock)

    waits = [backoff.failed(None) for _ in range(8)]  # 8 lanes, the API down for all

    assert waits[0] == (0.2, True)
    assert all(wait == pytest.approx(0.2) and not first for wait, first in waits[1:])


def test_the_wait_grows_once_per_round_and_a_success_resets_it() -> None:
    clock = ManualClock()
    backoff = _SharedBackoff(SCHEDULE, clock)

    first, _ = backoff.failed(None)
    clock.advance(first)
    second, again = backoff.failed(None)
    assert first == 0.2 and second == pytest.approx(0.4) and not again

    backoff.succeeded()
    assert backoff.failed(None) == (0.2, True)
