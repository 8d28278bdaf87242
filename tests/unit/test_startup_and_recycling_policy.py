"""The start-up deadline and the recycling decision: pure policies, time from a test's clock."""

from __future__ import annotations

from adapters.clock import ManualClock
from app.config import lifecycle_from, recycle_from
from app.settings import load_settings
from domain.lifecycle import (
    RecyclePolicy,
    Wear,
    recycle_reason,
    startup_expired,
    startup_wait,
    take_budget,
)

MB = 2**20


def test_the_start_up_deadline_passes_exactly_at_the_timeout_and_not_a_moment_before() -> None:
    clock = ManualClock()
    began = clock.now()
    clock.advance(899.999)
    assert not startup_expired(began, clock.now(), 900.0)
    assert abs((startup_wait(began, clock.now(), 900.0) or 0) - 0.001) < 1e-6
    clock.advance(0.001)
    assert startup_expired(began, clock.now(), 900.0)
    assert startup_wait(began, clock.now(), 900.0) == 0.0


def test_no_start_up_timeout_never_expires_and_never_wakes_the_controller() -> None:
    clock = ManualClock()
    began = clock.now()
    clock.advance(10**9)
    assert not startup_expired(began, clock.now(), None)
    assert startup_wait(began, clock.now(), None) is None


def test_the_settings_give_a_fifteen_minute_start_up_and_zero_means_none() -> None:
    assert lifecycle_from(load_settings(env_file=None)).startup_timeout == 900.0
    assert lifecycle_from(load_settings(env_file=None, STARTUP_TIMEOUT=0)).startup_timeout is None
    recycle = recycle_from(load_settings(env_file=None, MAX_RSS_MB=512, MAX_JOBS=3,
                                         MAX_VRAM_FRACTION=0.9))
    assert recycle == RecyclePolicy(max_jobs=3, max_rss_bytes=512 * MB, max_vram_fraction=0.9)


def test_with_every_limit_off_a_worker_is_never_recycled_whatever_its_wear() -> None:
    wear = Wear(jobs_taken=10**9, rss_bytes=10**15, vram_fraction=1.0)
    assert recycle_reason(wear, RecyclePolicy()) is None
    assert take_budget(10**9, RecyclePolicy()) is None


def test_max_jobs_recycles_once_that_many_were_taken_and_caps_each_take_to_what_is_left() -> None:
    policy = RecyclePolicy(max_jobs=5)
    assert recycle_reason(Wear(jobs_taken=4), policy) is None
    assert take_budget(4, policy) == 1
    assert "MAX_JOBS=5" in (recycle_reason(Wear(jobs_taken=5), policy) or "")
    assert take_budget(5, policy) == 0
    assert take_budget(7, policy) == 0  # a server that handed out more than asked


def test_resident_memory_past_the_limit_recycles_and_an_unknown_reading_does_not() -> None:
    policy = RecyclePolicy(max_rss_bytes=1024 * MB)
    assert recycle_reason(Wear(rss_bytes=1024 * MB), policy) is None
    reason = recycle_reason(Wear(rss_bytes=1025 * MB), policy)
    assert reason is not None and "MAX_RSS_MB=1024" in reason and "1025 MB" in reason
    assert recycle_reason(Wear(rss_bytes=None), policy) is None


def test_vram_still_allocated_after_a_job_past_the_fraction_recycles() -> None:
    policy = RecyclePolicy(max_vram_fraction=0.8)
    assert recycle_reason(Wear(vram_fraction=0.8), policy) is None
    assert "MAX_VRAM_FRACTION=0.8" in (recycle_reason(Wear(vram_fraction=0.81), policy) or "")
    assert recycle_reason(Wear(vram_fraction=None), policy) is None  # no accelerator in use


def test_a_model_that_asks_for_a_fresh_worker_gets_one_even_with_every_limit_off() -> None:
    reason = recycle_reason(Wear(asked_by="job-7"), RecyclePolicy())
    assert reason == "job job-7 asked for a fresh worker (refresh_worker)"
