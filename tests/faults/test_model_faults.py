"""The model misbehaving: raising, running out of memory, hanging past the work timeout.

The echo model does what a job's ``_echo`` asks (``adapters/local/echo_model.py``); the real worker
process runs it against the fake job API.
"""

from __future__ import annotations

import time

from tests.support.fault_kit import Rig


def test_a_model_that_raises_fails_that_job_with_its_message_and_the_next_job_runs(
    rig: Rig,
) -> None:
    worker = rig.start()
    broken = rig.submit({"_echo": {"fail": "the weights are corrupt"}})
    after = rig.submit({"n": 2})
    assert rig.wait_result(broken) == {"error": "RuntimeError: the weights are corrupt"}
    assert rig.wait_result(after) == {"output": {"n": 2}}
    assert rig.api.status(broken)["status"] == "FAILED"  # type: ignore[index]
    assert worker.proc.poll() is None
    assert worker.terminate() == 0
    rig.assert_delivered_once()
    rig.assert_polite()


def test_running_out_of_memory_fails_that_job_clearly_and_the_next_job_runs(rig: Rig) -> None:
    worker = rig.start()
    greedy = rig.submit({"_echo": {"oom": True}})
    after = rig.submit({"n": 2})
    assert rig.wait_result(greedy) == {
        "error": "CUDA out of memory (simulated by the echo model)"
    }
    assert rig.wait_result(after) == {"output": {"n": 2}}
    assert worker.proc.poll() is None
    assert worker.terminate() == 0
    rig.assert_delivered_once()
    rig.assert_polite()


def test_a_job_past_the_work_timeout_is_interrupted_and_failed_and_the_next_job_runs(
    rig: Rig,
) -> None:
    worker = rig.start(EXECUTION_TIMEOUT="1000")
    hung = rig.submit({"_echo": {"sleep_ms": 60_000}})
    rig.wait_taken(hung)
    taken = time.monotonic()
    assert rig.wait_result(hung, timeout=10) == {"error": "execution timeout after 1000 ms"}
    assert time.monotonic() - taken < 8.0  # the 1 s timeout, not the 60 s job; room for load
    after = rig.submit({"n": 2})
    assert rig.wait_result(after) == {"output": {"n": 2}}
    assert worker.proc.poll() is None
    assert worker.terminate() == 0
    rig.assert_delivered_once()
    rig.assert_polite()


def test_a_model_that_ignores_the_timeout_gets_its_job_reported_then_the_worker_exits_3_and_a_restart_carries_on(  # noqa: E501
    rig: Rig,
) -> None:
    settings = {"EXECUTION_TIMEOUT": "1000", "OVERRUN_GRACE": "500"}
    worker = rig.start(**settings)
    stuck = rig.submit({"_echo": {"sleep_ms": 120_000, "ignore_cancel": True}})
    rig.wait_taken(stuck)
    assert worker.wait(timeout=15) == 3  # README: 3 = overran and ignored cancellation
    assert rig.api.results[stuck] == {"error": "execution timeout after 1000 ms"}
    assert worker.saw("model_stuck", job_id=stuck)

    restarted = rig.start(**settings)  # the platform restarts the container
    after = rig.submit({"n": 2})
    assert rig.wait_result(after) == {"output": {"n": 2}}
    assert restarted.terminate() == 0
    rig.assert_delivered_once()
    rig.assert_polite()
