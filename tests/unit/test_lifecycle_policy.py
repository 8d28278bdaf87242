"""The lifecycle policy, with time driven by freezegun through the system clock adapter."""

from __future__ import annotations

import pytest
from freezegun import freeze_time

from adapters.clock import SystemClock
from domain.lifecycle import (
    Action,
    LifecyclePolicy,
    Observation,
    decide,
    execution_timed_out,
    idle_ttl_expired,
    seconds_until_idle_expiry,
)

DEFAULT = LifecyclePolicy.from_millis(terminate_idle_time_ms=60_000, execution_timeout_ms=300_000)


def test_the_seed_default_of_60000_ms_is_one_minute_not_sixteen_hours() -> None:
    assert DEFAULT.idle_ttl == 60.0
    assert DEFAULT.execution_timeout == 300.0


def test_idle_ttl_expires_after_exactly_the_configured_time() -> None:
    clock = SystemClock()
    with freeze_time("2026-11-28 12:00:00") as frozen:
        last_activity = clock.now()
        frozen.tick(59.999)
        obs = Observation(now=clock.now(), last_activity=last_activity)
        assert decide(obs, DEFAULT) is Action.TAKE_JOB
        frozen.tick(0.001)
        obs = Observation(now=clock.now(), last_activity=last_activity)
        assert decide(obs, DEFAULT) is Action.TERMINATE


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


def test_idle_ttl_never_expires_while_a_job_is_on_the_model() -> None:
    clock = SystemClock()
    with freeze_time("2026-11-28 12:00:00") as frozen:
        last = clock.now()
        started = clock.now()
        frozen.tick(3600)
        policy = LifecyclePolicy(idle_ttl=60, execution_timeout=7200)
        obs = Observation(now=clock.now(), last_activity=last, model_job_started=started)
        assert decide(obs, policy) is Action.WAIT


def test_idle_ttl_never_expires_while_a_result_waits_to_be_delivered() -> None:
    clock = SystemClock()
    with freeze_time("2026-11-28 12:00:00") as frozen:
        last = clock.now()
        frozen.tick(3600)
        obs = Observation(now=clock.now(), last_activity=last, undelivered=1)
        assert decide(obs, DEFAULT) is Action.TAKE_JOB
        assert decide(Observation(now=clock.now(), last_activity=last), DEFAULT) is Action.TERMINATE


@pytest.mark.parametrize(
    "policy",
    [
        LifecyclePolicy.from_millis(terminate_idle_time_ms=0, execution_timeout_ms=1000),
        LifecyclePolicy.from_millis(
            terminate_idle_time_ms=60_000, execution_timeout_ms=1000, worker_zero=True
        ),
    ],
    ids=["TERMINATE_IDLE_TIME=0", "WORKER_ZERO=true"],
)
def test_worker_zero_never_expires(policy: LifecyclePolicy) -> None:
    clock = SystemClock()
    with freeze_time("2026-11-28 12:00:00") as frozen:
        last = clock.now()
        frozen.tick(10 * 365 * 24 * 3600)
        obs = Observation(now=clock.now(), last_activity=last)
        assert policy.idle_ttl is None
        assert decide(obs, policy) is Action.TAKE_JOB
        assert seconds_until_idle_expiry(obs, policy) is None


def test_work_timeout_counts_from_the_job_start() -> None:
    clock = SystemClock()
    policy = LifecyclePolicy.from_millis(terminate_idle_time_ms=0, execution_timeout_ms=2_500)
    with freeze_time("2026-11-28 12:00:00") as frozen:
        started = clock.now()
        frozen.tick(2.499)
        assert not execution_timed_out(started, clock.now(), policy.execution_timeout)
        frozen.tick(0.001)
        assert execution_timed_out(started, clock.now(), policy.execution_timeout)


def test_a_model_past_timeout_and_grace_is_abandoned_never_terminated() -> None:
    policy = LifecyclePolicy(idle_ttl=1, execution_timeout=10, overrun_grace=5)
    assert decide(Observation(now=114.9, last_activity=0, model_job_started=100), policy) is (
        Action.WAIT
    )
    assert decide(Observation(now=115, last_activity=0, model_job_started=100), policy) is (
        Action.ABANDON
    )


def test_stopping_waits_for_deliveries_then_exits() -> None:
    assert decide(Observation(now=1, last_activity=0, undelivered=2, stopping=True), DEFAULT) is (
        Action.WAIT
    )
    assert decide(Observation(now=1, last_activity=0, stopping=True), DEFAULT) is Action.EXIT


def test_stopping_never_terminates_the_pod_even_when_idle_long() -> None:
    obs = Observation(now=10_000, last_activity=0, stopping=True)
    assert decide(obs, DEFAULT) is Action.EXIT
