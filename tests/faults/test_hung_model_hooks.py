"""Model code that hangs where the worker calls it (issue 26, items 6 and 7).

A ``concurrency()`` hook that never returns must not freeze the controller (jobs still marked
running and answered, SIGTERM still a clean stop). An ``async def run`` that blocks its event
loop defeats job-stop and the work timeout alike: the worker gives up on it after
``OVERRUN_GRACE`` and exits 3, and a job the platform stopped still gets no result.
"""

from __future__ import annotations

from tests.support.fault_kit import Rig, poll_until

MODELS = "tests.support.misbehaving_models"


def test_a_concurrency_hook_that_hangs_leaves_jobs_running_and_sigterm_working(rig: Rig) -> None:
    worker = rig.start(MODEL=f"{MODELS}:hung_concurrency", CONCURRENCY="2")
    first, second = rig.submit({"n": 1}), rig.submit({"n": 2})
    assert rig.wait_result(first)["output"] == {"echo": {"n": 1}}
    assert rig.wait_result(second)["output"] == {"echo": {"n": 2}}
    worker.wait_for("concurrency_hung", timeout=10)
    assert rig.running_marks() == []
    assert worker.terminate(timeout=15) == 0
    rig.assert_delivered_once()


def test_an_async_model_blocking_its_loop_after_a_job_stop_gets_no_result_and_the_worker_exits_3(
    rig: Rig,
) -> None:
    worker = rig.start(MODEL=f"{MODELS}:loop_blocker", OVERRUN_GRACE="1000",
                       EXECUTION_TIMEOUT="60000")
    marker = rig.root / "blocking"
    stopped = rig.submit({"block_s": 20, "marker": str(marker)})
    poll_until(marker.exists, 30, "the model to block its loop")
    rig.api.cancel(stopped)
    assert worker.wait(timeout=15) == 3
    assert worker.saw("model_stuck", job_id=stopped)
    assert stopped not in rig.api.results, rig.api.results.get(stopped)
    assert rig.kept_results() == [] and rig.running_marks() == []
    successor = rig.start()
    after = rig.submit({"n": "after"})
    assert rig.wait_result(after) == {"output": {"n": "after"}}
    assert successor.terminate() == 0
    assert stopped not in rig.api.results  # not even "worker restarted" at the next start


def test_an_async_model_blocking_its_loop_past_its_timeout_is_reported_and_the_worker_exits_3(
    rig: Rig,
) -> None:
    worker = rig.start(MODEL=f"{MODELS}:loop_blocker", OVERRUN_GRACE="500",
                       EXECUTION_TIMEOUT="1000")
    blocked = rig.submit({"block_s": 20})
    assert rig.wait_result(blocked) == {"error": "execution timeout after 1000 ms"}
    assert worker.wait(timeout=15) == 3
