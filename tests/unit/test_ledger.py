"""The controller's books: each job id held once, duplicates refused, every path ends."""

from __future__ import annotations

from adapters.clock import ManualClock
from domain.execution import RunningJob
from domain.job import Job
from domain.ledger import Ledger


def job(job_id: str) -> Job:
    return Job(job_id, {}, 0.0)


def running(j: Job) -> RunningJob:
    return RunningJob(j, started=0.0, timeout_s=10, clock=ManualClock())


def test_a_job_goes_from_queued_to_running_to_undelivered_to_gone() -> None:
    ledger = Ledger()
    assert ledger.take(job("a"))
    assert ledger.in_flight_ids() == ("a",) and ledger.queued == 1
    a = ledger.next_queued()
    assert a is not None
    r = running(a)
    ledger.start(r)
    assert ledger.finish("a", r)
    assert ledger.undelivered == 1 and ledger.in_flight_ids() == ("a",)
    ledger.delivered("a")
    assert ledger.in_flight_ids() == () and ledger.undelivered == 0


def test_an_id_handed_out_again_while_held_is_a_duplicate_at_every_stage() -> None:
    ledger = Ledger()
    ledger.take(job("d"))
    assert not ledger.take(job("d"))  # queued
    r = running(ledger.next_queued() or job("x"))
    ledger.start(r)
    assert not ledger.take(job("d"))  # running
    ledger.finish("d", r)
    assert not ledger.take(job("d"))  # its result is undelivered
    assert ledger.in_flight_ids() == ("d",)
    ledger.delivered("d")
    assert ledger.take(job("d"))  # delivered: a new job with the same id


def test_an_outcome_for_a_job_already_given_up_on_is_dropped() -> None:
    ledger = Ledger()
    ledger.take(job("stuck"))
    r = running(ledger.next_queued() or job("x"))
    ledger.start(r)
    ledger.answered_without_model("stuck")  # the worker reported it and moved on
    assert not ledger.finish("stuck", r)
    assert ledger.undelivered == 1


def test_results_recovered_from_an_earlier_process_count_as_undelivered() -> None:
    ledger = Ledger()
    ledger.recovered(["old-1", "old-2"])
    assert ledger.undelivered == 2 and not ledger.take(job("old-1"))


def test_a_stop_request_that_overtook_its_job_is_remembered() -> None:
    ledger = Ledger()
    ledger.remember_stop("early")
    assert ledger.stop_requested_early("early") and not ledger.stop_requested_early("other")
