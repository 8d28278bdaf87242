"""Code nobody here wrote, against the fake platform: RunPod's SDK (``runpod`` 1.12.0).

Its worker (``runpod.serverless.start``) takes jobs from the fake, streams a generator
handler's chunks to the job-stream route, takes in batches with a concurrency modifier and
stops a job the platform cancels. Its client (``runpod.Endpoint``) runs jobs that a real
podworker process (``MODEL=echo``) or the SDK's own streaming worker does. Whatever the
official code sends that the fake answers differently is a bug in the fake.

The SDK runs from ``.venv-runpod`` (``make setup`` makes it); where it is missing the tests
skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import wait_until
from tests.support.official_runpod import (
    SDK_API_KEY,
    RecordingPlatform,
    SdkWorker,
    run_sdk_client,
    runpod_python,
)
from tests.support.worker_process import WorkerProcess, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    return runpod_python()


def podworker_on(platform: RecordingPlatform, tmp_path: Path) -> WorkerProcess:
    """``python -m app run`` (the echo model, which streams when a job asks) on ``platform``."""
    return WorkerProcess(worker_env(platform, tmp_path / "state",
                                    RUNPOD_AI_API_KEY=SDK_API_KEY), tmp_path)


@pytest.fixture
def platform() -> Iterator[RecordingPlatform]:
    fake = RecordingPlatform(long_poll_s=0.5, api_key=SDK_API_KEY, runsync_wait_s=20)
    with fake:
        yield fake


@pytest.fixture
def sdk_worker(sdk_python: Path, platform: RecordingPlatform,
               tmp_path: Path) -> Iterator[Any]:
    started: list[SdkWorker] = []

    def start(mode: str, **kwargs: Any) -> SdkWorker:
        worker = SdkWorker(sdk_python, platform, tmp_path, mode, **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


def chunks_of(platform: RecordingPlatform, job_id: str) -> list[Any]:
    return [output for jid, output in platform.streamed if jid == job_id]


# --- the official worker ------------------------------------------------------------------
def test_the_sdk_worker_streams_every_chunk_in_order_then_posts_the_final_result(
    platform: RecordingPlatform, sdk_worker: Any
) -> None:
    jobs = [platform.submit({"chunks": n}) for n in (3, 5)]
    sdk_worker("stream")
    assert platform.wait_for_results(2, timeout=60)
    # an exchange is noted once its answer is made, just after the result it carries
    wait_until(lambda: len(platform.seen("job-done")) >= 2, timeout=10, what="both job-dones",
               interval=0.02)
    for job_id, n in zip(jobs, (3, 5), strict=True):
        assert chunks_of(platform, job_id) == [{"i": i, "text": f"chunk-{i}"} for i in range(n)]
        assert platform.results[job_id] == {"output": []}
        assert platform.jobs[job_id].is_stream
        # every chunk was answered before the final result was sent
        order = [e for e in platform.exchanges if job_id in e.path]
        assert [e.path.split("/")[3] for e in order] == ["job-stream"] * n + ["job-done"]
        assert all(e.reply.status == 200 for e in order)
    assert platform.late_stream == [] and platform.duplicates == []


def test_with_return_aggregate_stream_the_final_output_is_the_list_of_chunks(
    platform: RecordingPlatform, sdk_worker: Any
) -> None:
    job_id = platform.submit({"chunks": 4})
    sdk_worker("stream_aggregate")
    assert platform.wait_for_results(1, timeout=60)
    expected = [{"i": i, "text": f"chunk-{i}"} for i in range(4)]
    assert chunks_of(platform, job_id) == expected
    assert platform.results[job_id] == {"output": expected}


def test_a_concurrency_modifier_makes_the_sdk_take_through_job_take_batch(
    platform: RecordingPlatform, sdk_worker: Any
) -> None:
    jobs = [platform.submit({"i": i}) for i in range(8)]
    sdk_worker("plain", concurrency=4)
    assert platform.wait_for_results(8, timeout=60)
    batches = platform.seen("job-take-batch")
    assert batches, "no job-take-batch request"
    assert {e.query["batch_size"][0] for e in batches} <= {"1", "2", "3", "4"}
    assert "4" in {e.query["batch_size"][0] for e in batches}
    assert any(isinstance(e.reply_json(), list) for e in batches)
    assert {job_id: platform.results[job_id]["output"] for job_id in jobs} == {
        job_id: {"i": i} for i, job_id in enumerate(jobs)}


def test_a_cancelled_job_reaches_the_sdk_worker_through_job_stop_and_gets_no_result(
    platform: RecordingPlatform, sdk_worker: Any
) -> None:
    job_id = platform.submit({"chunks": 1, "hang": True})
    worker = sdk_worker("stream")
    assert platform.wait_until(lambda p: len(chunks_of(p, job_id)) == 1, timeout=60)
    assert platform.cancel(job_id) == "CANCELLED"
    worker.wait_for_log("Job stopped.")
    stops = [e for e in platform.seen("job-stop") if e.reply.status == 200]
    assert [e.reply_json() for e in stops] == [{"jobsToStop": [job_id]}]
    assert job_id not in platform.results
    assert platform.status(job_id)["status"] == "CANCELLED"  # type: ignore[index]


# --- the official client ------------------------------------------------------------------
def test_the_sdk_client_cancels_a_queued_job_and_purges_the_queue(
    sdk_python: Path, platform: RecordingPlatform, tmp_path: Path
) -> None:
    answers = run_sdk_client(sdk_python, platform, tmp_path, [
        {"call": "run", "job": "a", "input": {"n": 1}},
        {"call": "run", "job": "b", "input": {"n": 2}},
        {"call": "run", "job": "c", "input": {"n": 3}},
        {"call": "status", "job": "a"},
        {"call": "cancel", "job": "a"},
        {"call": "status", "job": "a"},
        {"call": "health"},
        {"call": "purge_queue"},
        {"call": "health"},
    ])
    job_a = answers[0]
    assert answers[3] == "IN_QUEUE"
    assert answers[4] == {"id": job_a, "status": "CANCELLED"}
    assert answers[5] == "CANCELLED"
    assert answers[6]["jobs"]["inQueue"] == 2
    assert answers[7] == {"removed": 2, "status": "completed"}
    assert answers[8] == {
        "jobs": {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0},
        "workers": {"idle": 0, "running": 0},
    }


def test_the_sdk_client_runs_jobs_that_podworker_does(
    sdk_python: Path, platform: RecordingPlatform, tmp_path: Path
) -> None:
    worker = podworker_on(platform, tmp_path)
    try:
        answers = run_sdk_client(sdk_python, platform, tmp_path, [
            {"call": "run", "job": "a", "input": {"prompt": "fox"}},
            {"call": "output", "job": "a"},
            {"call": "status", "job": "a"},
            {"call": "run_sync", "input": {"prompt": "owl"}},
            {"call": "run", "job": "bad", "input": {"_echo": {"fail": "boom"}}},
            {"call": "output", "job": "bad"},
            {"call": "status_raw", "job": "bad"},
            {"call": "retry", "job": "bad"},
            {"call": "run", "job": "slow",
             "input": {"_echo": {"progress": 2, "sleep_ms": 60000}}},
        ])
        assert answers[1] == {"prompt": "fox"}
        assert answers[2] == "COMPLETED"
        assert answers[3] == {"prompt": "owl"}
        bad = answers[4]
        assert answers[5] is None  # a failed job has no output
        failed = answers[6]
        assert (failed["status"], failed["workerId"]) == ("FAILED", "e2e-pod")
        assert "boom" in failed["error"]
        assert failed["delayTime"] >= 0 and failed["executionTime"] >= 0
        assert answers[7] == {"id": bad, "status": "IN_QUEUE"}
        slow = answers[8]
        assert platform.wait_until(
            lambda p: p.jobs[bad].status == "FAILED"
            and p.jobs[slow].progress[-1:] == [{"step": 2, "of": 2}], timeout=30)
        status = run_sdk_client(sdk_python, platform, tmp_path, [
            {"call": "status_raw", "job": "slow", "id": slow}, {"call": "health"}])
        assert status[0]["status"] == "IN_PROGRESS"
        assert status[0]["output"] == {"step": 2, "of": 2}  # the last progress update
        assert status[1]["jobs"] == {"completed": 2, "failed": 1, "inProgress": 1,
                                     "inQueue": 0, "retried": 1}
        assert status[1]["workers"] == {"idle": 0, "running": 1}
        # a cancel reaches podworker through its job-stop poll; no result follows
        cancelled = run_sdk_client(sdk_python, platform, tmp_path, [
            {"call": "cancel", "job": "slow", "id": slow},
            {"call": "status", "job": "slow"},
        ])
        assert cancelled == [{"id": slow, "status": "CANCELLED"}, "CANCELLED"]
        worker.wait_for("job_stop", timeout=60, job_id=slow)
    finally:
        worker.close()
    assert platform.duplicates == [] and platform.late_progress == []


def test_the_sdk_client_streams_what_the_sdk_worker_streams(
    sdk_python: Path, platform: RecordingPlatform, sdk_worker: Any, tmp_path: Path
) -> None:
    sdk_worker("stream")
    answers = run_sdk_client(sdk_python, platform, tmp_path, [
        {"call": "run", "job": "s", "input": {"chunks": 4}},
        {"call": "stream", "job": "s"},
        {"call": "status", "job": "s"},
    ])
    assert answers[1] == [{"i": i, "text": f"chunk-{i}"} for i in range(4)]
    assert answers[2] == "COMPLETED"
    wait_until(lambda: bool(platform.seen("stream")), timeout=5, what="a /stream request")


def test_the_sdk_client_streams_what_podworker_streams(
    sdk_python: Path, platform: RecordingPlatform, tmp_path: Path
) -> None:
    worker = podworker_on(platform, tmp_path)
    try:
        answers = run_sdk_client(sdk_python, platform, tmp_path, [
            {"call": "run", "job": "s", "input": {"_echo": {"stream": 4}}},
            {"call": "stream", "job": "s"},
            {"call": "status", "job": "s"},
        ])
    finally:
        worker.close()
    assert answers[1] == [{"i": i, "text": f"chunk-{i}"} for i in range(4)]
    assert answers[2] == "COMPLETED"
    job = answers[0]
    assert platform.jobs[job].is_stream and platform.late_stream == []
