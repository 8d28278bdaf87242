"""Pod termination failing when the idle TTL expires: retried where it may help, logged, and the
process still exits (README: 0 when the pod was terminated, 5 when it could not be).

The fake job API also serves RunPod's GraphQL ``podTerminate`` and records ``terminations``.
"""

from __future__ import annotations

import pytest

from tests.support.fault_kit import POD_ID, Rig
from tests.support.worker_process import RUNPOD_KEY, WorkerProcess


def start_terminating_worker(rig: Rig) -> WorkerProcess:
    return rig.start(
        TERMINATE_IDLE_TIME="1000",
        RUNPOD_API_KEY=RUNPOD_KEY,
        RUNPOD_API_URL=rig.api.graphql_url,
    )


def terminate_failures(worker: WorkerProcess) -> list[str]:
    return [str(e["message"]) for e in worker.events() if e.get("event") == "terminate_failed"]


def test_a_graphql_error_from_pod_termination_is_logged_and_the_worker_exits_5(
    rig: Rig,
) -> None:
    rig.api.inject_fault("graphql", errors=["pod not found"], count=10)
    worker = start_terminating_worker(rig)
    job = rig.submit({"n": 1})
    assert rig.wait_result(job) == {"output": {"n": 1}}
    assert worker.wait(timeout=20) == 5
    assert rig.api.requests["graphql"] == 1, "an answer that names an error is not retried"
    [failure] = terminate_failures(worker)
    assert "podTerminate failed: pod not found" in failure
    assert rig.api.terminations == []
    rig.assert_delivered_once()
    rig.assert_polite()


def test_pod_termination_answering_5xx_is_retried_and_the_pod_terminated_when_it_recovers(
    rig: Rig,
) -> None:
    rig.api.inject_fault("graphql", status=503, count=2)
    worker = start_terminating_worker(rig)
    job = rig.submit({"n": 1})
    assert rig.wait_result(job) == {"output": {"n": 1}}
    assert worker.wait(timeout=30) == 0
    assert rig.api.requests["graphql"] == 3
    assert rig.api.terminations == [POD_ID]
    assert worker.saw("pod_terminated")
    assert terminate_failures(worker) == []
    rig.assert_delivered_once()


@pytest.mark.slow
def test_pod_termination_answering_5xx_for_good_is_tried_5_times_then_logged_and_the_worker_exits_5(
    rig: Rig,
) -> None:
    rig.api.inject_fault("graphql", status=503, count=1000)
    worker = start_terminating_worker(rig)
    job = rig.submit({"n": 1})
    assert rig.wait_result(job) == {"output": {"n": 1}}
    assert worker.wait(timeout=60) == 5
    assert rig.api.requests["graphql"] == 5, "5 attempts, 1 s doubling to 15 s apart"
    [failure] = terminate_failures(worker)
    assert "answered 503" in failure
    assert rig.api.terminations == []
    rig.assert_delivered_once()
