"""Models that misbehave beyond ``except Exception``: raising ``SystemExit`` and friends, leaving a
non-daemon thread behind, returning just as the worker gives up on them; a model factory that
fails with its own ``TypeError``.

Issue 11, items 4, 5, 9b and 9d. The model is ``tests.support.misbehaving_models:misbehaving``:
it echoes a job's input (under ``"echo"``) unless the input asks it to misbehave, so one worker
process runs the bad job and then a good one. ``EXECUTION_TIMEOUT`` is two minutes where the
test waits for an error "at once", so a worker that only answers through its timeout fails.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.fault_kit import Rig
from tests.support.misbehaving_models import FACTORY_ERROR
from tests.support.worker_process import WorkerProcess

MODEL = "tests.support.misbehaving_models:misbehaving"
LONG_TIMEOUT = {"MODEL": MODEL, "EXECUTION_TIMEOUT": "120000"}


def exit_within(worker: WorkerProcess, timeout: float) -> int | None:
    """The exit code, or None when the process is still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while worker.proc.poll() is None and time.monotonic() < deadline:
        pause.wait(0.05)
    return worker.proc.poll()


# --- 4: what ``except Exception`` misses ----------------------------------------------------
@pytest.mark.parametrize(
    "kind",
    ["SystemExit", "KeyboardInterrupt", "GeneratorExit", "BaseException", "UnprintableError"],
)
def test_a_model_raising_what_except_exception_misses_fails_that_job_at_once_naming_the_type_and_the_next_job_runs(  # noqa: E501
    rig: Rig, kind: str
) -> None:
    worker = rig.start(**LONG_TIMEOUT)
    bad = rig.submit({"raise": kind})
    after = rig.submit({"n": 2})
    answered = rig.api.wait_until(lambda s: bad in s.results, 20)
    assert answered, f"no result for the job raising {kind} in 20 s (the work timeout is 120 s)"
    result = rig.api.results[bad]
    assert set(result) == {"error"}, result
    assert kind in result["error"], f"the error does not name {kind}: {result['error']!r}"
    assert rig.wait_result(after, timeout=20) == {"output": {"echo": {"n": 2}}}
    assert worker.proc.poll() is None, "the worker process ended"
    assert worker.terminate(timeout=30) == 0
    rig.assert_delivered_once()


# --- 5: a non-daemon thread left behind -----------------------------------------------------
def test_a_model_that_leaves_a_non_daemon_thread_does_not_keep_the_process_alive_after_sigterm(
    rig: Rig,
) -> None:
    worker = rig.start(MODEL=MODEL)
    job = rig.submit({"thread": True, "n": 1})
    assert rig.wait_result(job) == {"output": {"echo": {"thread": True, "n": 1}}}
    worker.proc.terminate()
    code = exit_within(worker, 20)
    assert code == 0, f"exit code {code} (None: still alive 20 s after SIGTERM)"
    rig.assert_delivered_once()


def test_a_model_that_leaves_a_non_daemon_thread_and_overruns_its_timeout_still_exits_3(
    rig: Rig,
) -> None:
    worker = rig.start(MODEL=MODEL, EXECUTION_TIMEOUT="1000", OVERRUN_GRACE="500")
    stuck = rig.submit({"thread": True, "sleep_s": 60, "ignore_cancel": True})
    assert rig.wait_result(stuck, timeout=20) == {"error": "execution timeout after 1000 ms"}
    code = exit_within(worker, 20)
    assert code == 3, f"exit code {code} (None: still alive 20 s after reporting the job)"
    rig.assert_delivered_once()


# --- 9b: the model returns just as the worker gives up on it --------------------------------
def test_a_model_returning_just_as_the_worker_gives_up_on_it_gets_exactly_one_result_post(
    rig: Rig,
) -> None:
    # The model returns 1 ms after its deadline plus OVERRUN_GRACE, about when the worker gives
    # up on it: either side may report the timeout first (then the worker exits 3, or goes on),
    # never both. A race: this can pass on a worker that has the bug (today's usually does).
    worker = rig.start(MODEL=MODEL, EXECUTION_TIMEOUT="1000", OVERRUN_GRACE="500")
    job = rig.submit({"until_abandoned": True, "late_ms": 1})
    assert rig.wait_result(job, timeout=20) == {"error": "execution timeout after 1000 ms"}
    if worker.saw("model_stuck", job_id=job):  # the worker gave up first: it exits 3
        assert exit_within(worker, 30) == 3
    else:  # the model's own report came first: the worker goes on
        after = rig.submit({"n": 2})
        assert rig.wait_result(after, timeout=20) == {"output": {"echo": {"n": 2}}}
        assert worker.terminate(timeout=30) == 0
    assert rig.api.duplicates == [], f"two final results posted for {rig.api.duplicates}"
    assert rig.kept_results() == []


# --- 9d: a factory's own TypeError ----------------------------------------------------------
def test_a_model_factory_that_raises_type_error_inside_fails_the_start_with_that_error(
    rig: Rig,
) -> None:
    worker = rig.start(MODEL="tests.support.misbehaving_models:type_error_inside")
    code = exit_within(worker, 30)
    log = worker.log_path.read_text()
    assert code == 4, f"exit code {code} (4: the model did not load)\n{log[-800:]}"
    assert FACTORY_ERROR in log
    assert "required positional argument" not in log, "the factory was called again bare"
