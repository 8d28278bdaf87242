"""The real worker process with the HTTP adapters against the fake job API on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fakeplatform import FakeJobApiServer
from tests.support.worker_process import JOB_API_KEY, WorkerProcess, worker_env


@pytest.fixture
def api() -> Iterator[FakeJobApiServer]:
    with FakeJobApiServer(long_poll_s=0.5, api_key=JOB_API_KEY) as server:
        yield server


@pytest.mark.parametrize("runpod_names", [True, False], ids=["RUNPOD_names", "seed_names"])
def test_jobs_go_in_through_run_and_results_come_out_through_status(
    api: FakeJobApiServer, tmp_path: Path, runpod_names: bool
) -> None:
    worker = WorkerProcess(worker_env(api, tmp_path / "state", runpod_names=runpod_names), tmp_path)
    try:
        ok = api.submit({"prompt": "a cat"})
        bad = api.submit({"_echo": {"fail": "the model broke"}})
        assert api.wait_for_results(2, timeout=30)
        assert api.status(ok) == {"id": ok, "status": "COMPLETED", "output": {"prompt": "a cat"}}
        assert api.status(bad) == {"id": bad, "status": "FAILED",
                                   "error": "RuntimeError: the model broke"}
        assert worker.terminate() == 0
    finally:
        worker.close()
    assert api.stats()["duplicates"] == 0
    assert api.unauthorized == 0


def test_pings_carry_the_job_in_flight_and_nothing_when_idle(
    api: FakeJobApiServer, tmp_path: Path
) -> None:
    worker = WorkerProcess(worker_env(api, tmp_path / "state"), tmp_path)
    try:
        job = api.submit({"_echo": {"sleep_ms": 800}})
        assert api.wait_until(lambda s: ("e2e-pod", (job,)) in s.pings, timeout=30)
        assert api.wait_for_results(1, timeout=30)
        # a ping names the job until the worker's loop hears it was delivered, then none
        assert api.wait_until(lambda s: s.pings[-1] == ("e2e-pod", ()), timeout=30)
        assert worker.terminate() == 0
    finally:
        worker.close()


def test_a_stop_request_cancels_the_running_job_and_posts_nothing_for_it(
    api: FakeJobApiServer, tmp_path: Path
) -> None:
    worker = WorkerProcess(worker_env(api, tmp_path / "state"), tmp_path)
    try:
        job = api.submit({"_echo": {"sleep_ms": 20_000}})
        assert api.wait_until(lambda s: job in s.taken, timeout=30)
        api.cancel(job)
        worker.wait_for("job_stopped", timeout=15, job_id=job)
        follow_up = api.submit({"after": "cancel"})
        assert api.wait_for_results(1, timeout=15)
        assert job not in api.results  # as RunPod's SDK does: the platform stopped it
        assert api.status(follow_up)["status"] == "COMPLETED"  # type: ignore[index]
        assert worker.terminate() == 0
    finally:
        worker.close()


def test_sigterm_mid_job_delivers_that_job_and_takes_no_other(
    api: FakeJobApiServer, tmp_path: Path
) -> None:
    worker = WorkerProcess(worker_env(api, tmp_path / "state"), tmp_path)
    try:
        first = api.submit({"_echo": {"sleep_ms": 1000}})
        assert api.wait_until(lambda s: first in s.taken, timeout=30)
        second = api.submit({"n": 2})
        assert worker.terminate() == 0
    finally:
        worker.close()
    assert api.status(first) == {"id": first, "status": "COMPLETED", "output": {}}
    assert api.status(second)["status"] == "IN_QUEUE"  # type: ignore[index]
