"""The lifecycle policy, with time driven by freezegun through the system clock adapter."""

from __future__ import annotations

import pytest
from freezegun import freeze_time

from adapters.clock import SystemClock
from app.config import lifecycle_from
from app.settings import load_settings
from domain.lifecycle import (
    Action,
    Decision,
    LifecyclePolicy,
    Observation,
    decide,
    idle_ttl_expired,
    room_to_take,
)

DEFAULT = LifecyclePolicy(idle_ttl=60.0, execution_timeout=300.0)


def test_the_seed_default_of_60000_ms_is_one_minute_not_sixteen_hours() -> None:
    policy = lifecycle_from(load_settings(env_file=None))
    assert policy.idle_ttl == 60.0
    assert policy.execution_timeout == 300.0


def test_idle_ttl_expires_after_exactly_the_configured_time_and_then_the_worker_retires() -> None:
    clock = SystemClock()
    with freeze_time("2026-11-28 12:00:00") as frozen:
        last_activity = clock.now()
        frozen.tick(59.999)
        decision = decide(Observation(now=clock.now(), last_activity=last_activity,
                                      take_allowed_at=1e12), DEFAULT)
        assert decision.action is Action.WAIT
        assert decision.wake_at == pytest.approx(last_activity + 60)
        frozen.tick(0.001)
        obs = Observation(now=clock.now(), last_activity=last_activity)
        assert decide(obs, DEFAULT).action is Action.RETIRE


def test_idle_clock_restarts_after_every_job() -> None:
    clock = SystemClock()
    with freeze_time("2026-11-28 12:00:00") as frozen:
        start = clock.now()
        frozen.tick(50)
        job_finished = clock.now()  # a job ended here: activity
        frozen.tick(50)
        assert idle_ttl_expired(start, clock.now(), 60.0)
        assert not idle_ttl_expired(job_finished, clock.now(), 60.0)
        frozen.tick(10)
        assert idle_ttl_expired(job_finished, clock.now(), 60.0)


@pytest.mark.parametrize(
    "busy",
    [{"running": (0.0,)}, {"queued": 1}, {"undelivered": 1}, {"take_out": True}],
    ids=["a job on the model", "a job queued", "a result undelivered", "a take out"],
)
def test_idle_ttl_never_expires_while_anything_is_in_flight(busy: dict[str, object]) -> None:
    clock = SystemClock()
    policy = LifecyclePolicy(idle_ttl=60, execution_timeout=7200)
    with freeze_time("2026-11-28 12:00:00") as frozen:
        last = clock.now()
        frozen.tick(3600)
        obs = Observation(now=clock.now(), last_activity=last, **busy)  # type: ignore[arg-type]
        assert decide(obs, policy).action is not Action.RETIRE


@pytest.mark.parametrize(
    ("env", "reason"),
    [({"TERMINATE_IDLE_TIME": "0"}, "TERMINATE_IDLE_TIME=0"),
     ({"WORKER_ZERO": "true"}, "WORKER_ZERO=true")],
)
def test_worker_zero_never_expires(
    env: dict[str, str], reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    policy = lifecycle_from(load_settings(env_file=None))
    assert policy.idle_ttl is None, reason
    clock = SystemClock()
    with freeze_time("2026-11-28 12:00:00") as frozen:
        last = clock.now()
        frozen.tick(10 * 365 * 24 * 3600)
        decision = decide(Observation(now=clock.now(), last_activity=last), policy)
        assert decision.action is Action.TAKE


def test_a_model_past_timeout_and_grace_is_abandoned_never_retired() -> None:
    policy = LifecyclePolicy(idle_ttl=1, execution_timeout=10, overrun_grace=5)
    waiting = decide(Observation(now=114.9, last_activity=0, running=(100.0,)), policy)
    assert waiting.action is Action.WAIT and waiting.wake_at == 115
    assert decide(Observation(now=115, last_activity=0, running=(100.0,)), policy).action is (
        Action.ABANDON
    )


def test_a_job_stop_ignored_for_the_grace_is_abandoned_like_an_overrun() -> None:
    policy = LifecyclePolicy(execution_timeout=300.0, overrun_grace=10.0)
    asked = Observation(now=105.0, last_activity=0.0, running=(100.0,), stopped=(101.0,))
    waiting = decide(asked, policy)
    assert waiting == Decision(Action.WAIT, 111.0)
    past = Observation(now=111.0, last_activity=0.0, running=(100.0,), stopped=(101.0,))
    assert decide(past, policy).action is Action.ABANDON


def test_results_awaiting_delivery_count_against_taking_up_to_the_held_bound() -> None:
    policy = LifecyclePolicy(idle_ttl=None, max_held=10)
    slow_api = Observation(now=1.0, last_activity=0.0, slots=4, running=(0.5,), undelivered=7)
    assert room_to_take(slow_api, policy) == 2  # 10 held at most: 1 running + 7 waiting
    assert decide(slow_api, policy).action is Action.TAKE
    at_bound = Observation(now=1.0, last_activity=0.0, slots=4, running=(0.5,), undelivered=9)
    assert room_to_take(at_bound, policy) == 0
    assert decide(at_bound, policy).action is Action.WAIT
    many_slots = Observation(now=1.0, last_activity=0.0, slots=32, undelivered=9)
    assert room_to_take(many_slots, policy) == 23  # never fewer than the slots


def test_a_free_slot_starts_a_queued_job_before_anything_else_even_when_stopping() -> None:
    obs = Observation(now=1, last_activity=0, queued=1, stopping_since=0.5)
    assert decide(obs, DEFAULT).action is Action.START
    full = Observation(now=1, last_activity=0, queued=1, running=(0.5,))
    assert decide(full, DEFAULT).action is Action.WAIT


def test_a_take_waits_for_its_backoff_and_never_doubles_up() -> None:
    backing_off = decide(Observation(now=1, last_activity=0, take_allowed_at=3), DEFAULT)
    assert backing_off.action is Action.WAIT and backing_off.wake_at == 3
    assert decide(Observation(now=3, last_activity=0, take_allowed_at=3), DEFAULT).action is (
        Action.TAKE
    )
    assert decide(Observation(now=3, last_activity=0, take_out=True), DEFAULT).action is (
        Action.WAIT
    )


def test_stopping_drains_deliveries_for_the_grace_then_exits() -> None:
    policy = LifecyclePolicy(shutdown_grace=30)
    draining = decide(Observation(now=1, last_activity=0, undelivered=2, stopping_since=0.5,
                                  last_finished=0.8), policy)
    assert draining.action is Action.DRAIN and draining.wake_at == pytest.approx(30.8)
    assert decide(Observation(now=31, last_activity=0, undelivered=2, stopping_since=0.5,
                              last_finished=0.8), policy).action is Action.EXIT
    assert decide(Observation(now=1, last_activity=0, stopping_since=0.5), policy).action is (
        Action.EXIT
    )


def test_stopping_gives_a_take_in_progress_its_grace_then_lets_it_go() -> None:
    policy = LifecyclePolicy(take_grace=2)
    waiting = decide(Observation(now=1, last_activity=0, take_out=True, stopping_since=0.5),
                     policy)
    assert waiting.action is Action.WAIT and waiting.wake_at == 2.5
    assert decide(Observation(now=2.5, last_activity=0, take_out=True, stopping_since=0.5),
                  policy).action is Action.EXIT


def test_stopping_never_retires_the_pod_even_when_idle_long() -> None:
    obs = Observation(now=10_000, last_activity=0, stopping_since=9_000)
    assert decide(obs, DEFAULT).action is Action.EXIT
