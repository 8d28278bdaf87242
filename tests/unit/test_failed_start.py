"""A start that fails (the load raises, the warm-up raises, the load hangs past
``STARTUP_TIMEOUT``) fails exactly one job with the phase, the error and the start-up log's
tail, takes no other, and exits with its code; the next start knows."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydantic import SecretStr

from adapters.host.start_history import FileStartHistory
from adapters.local.start_history import InMemoryStartHistory
from app.stages import ExitCode, WorkerState
from domain.lifecycle import FailedStarts, LifecyclePolicy
from tests.support.harness import make_harness, wait_until
from tests.support.startup_models import FailingStart, PhasedModel

KEY = "job-api-key-7c1e93b0aa"


def settings() -> SimpleNamespace:
    """What ``FailingStart`` reads of the settings."""
    return SimpleNamespace(AI_API_KEY=SecretStr(KEY))


def policy(startup_timeout: float | None = 900.0) -> LifecyclePolicy:
    return LifecyclePolicy(idle_ttl=None, execution_timeout=30.0, shutdown_grace=5.0,
                           startup_timeout=startup_timeout)


def assert_one_job_failed_with(h: Any, phase: str, error: str) -> str:
    assert h.api.taken == ["first"], "exactly one job taken"
    assert h.api.queued == 2, "the others stay queued"
    result = h.api.results["first"]
    assert not result.ok
    text = result.error or ""
    assert text.startswith("the worker could not start: ")
    assert f"(phase {phase}, after " in text
    assert error in text
    assert "last lines of the start-up log" in text
    assert "fetching weights with Authorization: [redacted]" in text  # the tail, scrubbed
    assert KEY[:6] not in text and KEY[-6:] not in text
    return text


def submit_three(h: Any) -> None:
    for job_id in ("first", "second", "third"):
        h.api.submit({"n": job_id}, job_id=job_id)


def test_a_load_that_raises_fails_one_job_with_its_phase_error_and_log_then_exits_4(
    tmp_path: Path,
) -> None:
    history = InMemoryStartHistory()
    h = make_harness(tmp_path, model=FailingStart(settings(), "weights", "oserror"),
                     secrets=(KEY,), history=history, policy=policy())
    submit_three(h)
    h.start()
    assert h.join(30) is ExitCode.MODEL_LOAD
    assert_one_job_failed_with(h, "weights", "OSError: weights not found at /models/sd")
    assert history.calls[0][:2] == ("failure", "weights")
    assert h.worker.snapshot.state is WorkerState.STOPPED


def test_a_warm_up_that_raises_is_reported_in_the_warmup_phase(tmp_path: Path) -> None:
    h = make_harness(tmp_path, model=FailingStart(settings(), "warmup", "raise"),
                     secrets=(KEY,), policy=policy())
    submit_three(h)
    h.start()
    assert h.join(30) is ExitCode.MODEL_LOAD
    assert_one_job_failed_with(h, "warmup", "RuntimeError: warm-up failed")


def test_a_load_that_hangs_is_ended_at_the_deadline_and_one_job_is_told_so(
    tmp_path: Path,
) -> None:
    h = make_harness(tmp_path, model=FailingStart(settings(), "weights", "hang"),
                     secrets=(KEY,), policy=policy(startup_timeout=1.0))
    submit_three(h)
    started = time.monotonic()
    h.start()
    assert h.join(30) is ExitCode.STARTUP_TIMEOUT
    took = time.monotonic() - started
    text = assert_one_job_failed_with(h, "weights", "did not finish within STARTUP_TIMEOUT (1 s)")
    assert took < 1.0 + 10.0, took  # the deadline, one take and a delivery
    assert h.worker.start_failure is not None and h.worker.start_failure.timed_out
    assert text.count("\n") >= 1


def test_a_failed_start_with_no_job_waiting_fails_nothing_and_exits_after_one_take(
    tmp_path: Path,
) -> None:
    h = make_harness(tmp_path, model=FailingStart(settings(), "weights", "oserror"),
                     policy=policy())
    h.start()
    assert h.join(30) is ExitCode.MODEL_LOAD
    assert h.api.takes == 1
    assert h.api.results == {}


def test_while_the_failed_start_delivers_its_job_health_says_startup_failed(
    tmp_path: Path,
) -> None:
    h = make_harness(tmp_path, model=FailingStart(settings(), "weights", "oserror"),
                     policy=policy())
    h.api.fail_posts = 3  # the job's result waits for a few retries
    submit_three(h)
    h.start()
    wait_until(lambda: h.worker.snapshot.state is WorkerState.STARTUP_FAILED, timeout=30,
               what="the startup_failed state")
    assert h.join(60) is ExitCode.MODEL_LOAD
    assert "first" in h.api.results


def test_a_failed_start_is_recorded_and_the_next_start_reports_the_crash_loop(
    tmp_path: Path,
) -> None:
    history = FileStartHistory(tmp_path / "state")
    for _ in range(2):
        h = make_harness(tmp_path, model=FailingStart(settings(), "weights", "oserror"),
                         history=history, policy=policy())
        h.start()
        assert h.join(30) is ExitCode.MODEL_LOAD
    assert history.failed_in_a_row().count == 2
    assert h.worker.failed_starts_before == 1
    good = make_harness(tmp_path, history=history, policy=policy()).start()
    wait_until(lambda: good.worker.snapshot.state is WorkerState.READY, timeout=30,
               what="ready")
    assert good.worker.failed_starts_before == 2
    assert history.failed_in_a_row() == FailedStarts()  # a start that succeeds clears it
    good.stop()


def test_a_stop_while_the_model_loads_exits_0_and_fails_no_job(tmp_path: Path) -> None:
    model = PhasedModel()
    h = make_harness(tmp_path, model=model, policy=policy())
    submit_three(h)
    h.start()
    assert model.entered["import"].wait(30)
    h.worker.request_stop("SIGTERM")
    assert h.join(30) is ExitCode.OK
    assert h.api.taken == []
    for phase in model.phases:
        model.release(phase)


def test_a_load_that_goes_on_past_the_deadline_cannot_start_jobs_afterwards(
    tmp_path: Path,
) -> None:
    release = threading.Event()

    class LateLoader:
        def load(self) -> None:
            release.wait(60)

        def run(self, job_input: dict[str, Any], ctx: Any) -> Any:
            raise AssertionError("a model past its start-up deadline must run no job")

    h = make_harness(tmp_path, model=LateLoader(), policy=policy(startup_timeout=0.5))
    h.api.fail_posts = 2
    submit_three(h)
    h.start()
    wait_until(lambda: h.worker.start_failure is not None, timeout=30, what="the failure")
    release.set()  # the load returns late: ModelLoaded arrives and is ignored
    assert h.join(60) is ExitCode.STARTUP_TIMEOUT
    assert h.api.taken == ["first"]
    assert "(phase load, after " in (h.api.results["first"].error or "")
