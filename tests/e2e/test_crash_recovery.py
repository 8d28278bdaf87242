"""kill -9 at the worst moments, then a restart: every result delivered exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.outbox.journal import peek
from fakeplatform import FakeJobApiServer
from tests.support.harness import wait_until
from tests.support.worker_process import JOB_API_KEY, WorkerProcess, worker_env


@pytest.fixture
def api() -> Iterator[FakeJobApiServer]:
    with FakeJobApiServer(long_poll_s=0.3, api_key=JOB_API_KEY) as server:
        yield server


def assert_no_secret_in(text: str) -> None:
    for secret in (JOB_API_KEY,):
        for i in range(len(secret) - 5):
            assert secret[i : i + 6] not in text, "a piece of a secret reached the logs"


def test_kill_after_the_model_finished_and_before_the_post_then_restart_delivers_once(
    api: FakeJobApiServer, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    api.inject_fault("done", status=503, count=10_000)  # every result post fails for now
    # retries a hundred times slower: once its first post was refused, the first worker sends
    # none for 20 s, so none is on its way to the fake when it is killed (one that was would be
    # served after the faults are cleared: a second post, and a legitimate one)
    first = WorkerProcess(worker_env(api, state), tmp_path, name="first", time_scale=100)
    try:
        job = api.submit({"answer": 42})
        outbox = state / "outbox"
        wait_until(lambda: bool(peek(outbox)), timeout=30, what="the result in the outbox")
        first.wait_for("result_deferred", timeout=30)  # its post was answered 503
        assert job not in api.results
        assert first.kill() == -9
    finally:
        first.close()
    api.clear_faults()
    second = WorkerProcess(worker_env(api, state), tmp_path, name="second")
    try:
        assert api.wait_for_results(1, timeout=30)
        second.wait_for("model_loaded", timeout=30)  # SIGTERM a worker that is up
        assert second.terminate() == 0
        assert peek(outbox) == []
    finally:
        second.close()
    assert api.status(job) == {"id": job, "status": "COMPLETED", "output": {"answer": 42}}
    assert api.duplicates == []
    assert_no_secret_in(first.log_path.read_text() + second.log_path.read_text())


def test_kill_during_the_model_then_restart_reports_the_job_failed(
    api: FakeJobApiServer, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = WorkerProcess(worker_env(api, state), tmp_path, name="first")
    try:
        job = api.submit({"_echo": {"sleep_ms": 60_000}})
        first.wait_for("job_taken", job_id=job)
        assert first.kill() == -9
    finally:
        first.close()
    assert job not in api.results
    second = WorkerProcess(worker_env(api, state), tmp_path, name="second")
    try:
        assert api.wait_for_results(1, timeout=30)
        nxt = api.submit({"next": True})
        assert api.wait_for_results(2, timeout=30)
        assert second.terminate() == 0
    finally:
        second.close()
    assert api.status(job) == {
        "id": job, "status": "FAILED",
        "error": "worker restarted while running this job (the worker process died)",
    }
    assert api.status(nxt)["status"] == "COMPLETED"  # type: ignore[index]
    assert api.duplicates == []
    assert_no_secret_in(first.log_path.read_text() + second.log_path.read_text())
