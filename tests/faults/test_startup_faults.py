"""The real worker process against the fake platform, with a model whose start goes wrong: the
load hangs (in Python; in a C call that ignores signals; in one that even holds the GIL), raises,
or its warm-up raises. The platform sees exactly one job FAILED, with the phase, the error and
the start-up log's last lines without secrets; no other job is taken; the process exits with the
documented code soon after the deadline. The next start, and ``doctor``, know about it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from app.startup import HARD_GRACE_S
from fakeplatform import FakeJobApiServer
from tests.support.harness import eventually
from tests.support.ports import free_port
from tests.support.startup_models import FACTORY_ERROR
from tests.support.worker_process import JOB_API_KEY, WorkerProcess, worker_env

MODELS = "tests.support.startup_models"
DEADLINE_S = 3.0
TIMED_OUT = "the start-up did not finish within STARTUP_TIMEOUT (3 s)"
GRACE_S = 20.0  # process start-up and a take and a post, on a loaded 2-core machine
EXIT_GRACE_S = 10.0  # from the failed start to the exit: about 0.1 s on an idle machine


@pytest.fixture
def api() -> Iterator[FakeJobApiServer]:
    with FakeJobApiServer(long_poll_s=0.5, api_key=JOB_API_KEY) as server:
        yield server


def start(api: FakeJobApiServer, tmp_path: Path, factory: str, **extra: str) -> WorkerProcess:
    env = worker_env(api, tmp_path / "state", MODEL=f"{MODELS}:{factory}",
                     STARTUP_TIMEOUT=str(int(DEADLINE_S * 1000)))
    env.update(extra)
    return WorkerProcess(env, tmp_path)


def the_one_failed_job(api: FakeJobApiServer, jobs: list[str]) -> str:
    """Exactly ``jobs[0]`` failed; the others were never taken. Returns its error."""
    assert api.taken == jobs[:1]
    assert [api.status(job)["status"] for job in jobs[1:]] == ["IN_QUEUE"] * (len(jobs) - 1)  # type: ignore[index]
    status: dict[str, Any] = api.status(jobs[0])  # type: ignore[assignment]
    assert status["status"] == "FAILED"
    error = str(status["error"])
    assert JOB_API_KEY not in error and JOB_API_KEY[:6] not in error
    assert "fetching weights with Authorization: [redacted]" in error  # the log's tail
    return error


@pytest.mark.parametrize(
    ("factory", "phase", "error", "code"),
    [
        ("hangs_in_python", "weights", TIMED_OUT, 8),
        ("hangs_in_c", "device", TIMED_OUT, 8),
        ("load_raises", "weights", "OSError: weights not found at /models/sd", 4),
        ("warmup_raises", "warmup", "RuntimeError: warm-up failed", 4),
    ],
)
def test_a_failed_start_fails_one_job_with_why_and_exits_with_its_code(
    api: FakeJobApiServer, tmp_path: Path, factory: str, phase: str, error: str, code: int
) -> None:
    jobs = [api.submit({"n": n}) for n in range(3)]
    health = free_port()
    began = time.monotonic()
    worker = start(api, tmp_path, factory, HEALTH_PORT=str(health), HEALTH_HOST="127.0.0.1")
    try:
        if code == 8:  # hanging: /health says where
            url = f"http://127.0.0.1:{health}/health"
            assert eventually(lambda: _phase(url) == phase, timeout=30), worker.events()
        assert worker.wait(DEADLINE_S + GRACE_S + 30) == code
        took, exited_at = time.monotonic() - began, time.time()
    finally:
        worker.close()
    text = the_one_failed_job(api, jobs)
    assert text.startswith(f"the worker could not start: {error}")
    assert f"(phase {phase}, after " in text
    failed = next(e for e in worker.events() if e.get("event") == "startup_failed")
    assert failed["phase"] == phase
    if code == 8:
        assert DEADLINE_S <= failed["seconds"] < DEADLINE_S + 5
    logged_at = datetime.strptime(failed["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert exited_at - logged_at.timestamp() < EXIT_GRACE_S  # one take, one post, exit
    assert took < DEADLINE_S + GRACE_S, took


def test_a_model_factory_that_raises_fails_one_job_in_phase_import_and_exits_4(
    api: FakeJobApiServer, tmp_path: Path
) -> None:
    jobs = [api.submit({"n": n}) for n in range(3)]
    worker = start(api, tmp_path, "factory_raises")
    try:
        assert worker.wait(GRACE_S + 30) == 4  # the model did not load, not a mistaken setting
    finally:
        worker.close()
    assert api.taken == jobs[:1]
    assert [api.status(job)["status"] for job in jobs[1:]] == ["IN_QUEUE"] * 2  # type: ignore[index]
    status: dict[str, Any] = api.status(jobs[0])  # type: ignore[assignment]
    error = str(status["error"])
    assert status["status"] == "FAILED"
    assert error.startswith(f"the worker could not start: MODEL={MODELS}:factory_raises: "
                            f"the factory raised RuntimeError: {FACTORY_ERROR}; key [redacted]")
    assert "(phase import, after " in error
    assert JOB_API_KEY[:6] not in error and JOB_API_KEY[:6] not in worker.log_path.read_text()
    assert worker.saw("startup_failed", phase="import"), worker.events()


def test_a_model_module_whose_import_raises_fails_one_job_in_phase_import_and_exits_4(
    api: FakeJobApiServer, tmp_path: Path
) -> None:
    job = api.submit({"n": 1})
    env = worker_env(api, tmp_path / "state", MODEL="tests.support.model_import_raises:build")
    worker = WorkerProcess(env, tmp_path)
    try:
        assert worker.wait(GRACE_S + 30) == 4
    finally:
        worker.close()
    status: dict[str, Any] = api.status(job)  # type: ignore[assignment]
    assert status["status"] == "FAILED"
    assert str(status["error"]).startswith(
        "the worker could not start: MODEL=tests.support.model_import_raises:build: importing "
        "tests.support.model_import_raises raised OSError: weights.safetensors is truncated")
    assert "(phase import, after " in str(status["error"])


def _phase(url: str) -> str | None:
    try:
        answer = requests.get(url, timeout=2)
    except requests.RequestException:
        return None
    return answer.json().get("phase") if answer.status_code == 503 else None


def test_a_load_that_holds_the_gil_is_ended_by_the_hard_deadline_with_every_threads_stack(
    api: FakeJobApiServer, tmp_path: Path
) -> None:
    job = api.submit({"n": 1})
    began = time.monotonic()
    worker = start(api, tmp_path, "hangs_holding_the_gil")
    try:
        assert worker.wait(DEADLINE_S + HARD_GRACE_S + GRACE_S + 30) == 1
        took = time.monotonic() - began
    finally:
        worker.close()
    log = worker.log_path.read_text()
    assert "Timeout (0:00:" in log  # faulthandler's dump of every thread: where it hung
    assert "startup_models.py" in log
    assert api.taken == [] and api.status(job)["status"] == "IN_QUEUE"  # type: ignore[index]
    assert took < DEADLINE_S + HARD_GRACE_S + GRACE_S, took


def test_the_next_start_and_doctor_report_the_starts_that_failed_in_a_row(
    api: FakeJobApiServer, tmp_path: Path
) -> None:
    for run in range(2):
        worker = start(api, tmp_path, "load_raises")
        try:
            assert worker.wait(60) == 4
        finally:
            worker.close()
        if run == 1:
            assert worker.saw("crash_loop", failed_starts=1), worker.events()
    env = worker_env(api, tmp_path / "state", MODEL=f"{MODELS}:load_raises")
    doctor = subprocess.run([sys.executable, "-m", "app", "doctor"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert "warn  starts" in doctor.stdout
    assert "the last 2 start(s) failed in a row; the last in phase weights" in doctor.stdout
    assert "did not load (phase weights)" in doctor.stdout
    assert JOB_API_KEY not in doctor.stdout
    assert api.taken == []  # no job waited: the failed starts failed none


def test_max_jobs_renews_the_worker_after_delivering_them_and_leaves_the_rest_queued(
    api: FakeJobApiServer, tmp_path: Path
) -> None:
    jobs = [api.submit({"n": n}) for n in range(3)]
    worker = WorkerProcess(worker_env(api, tmp_path / "state", MAX_JOBS="2"), tmp_path)
    try:
        assert worker.wait(60) == 7
    finally:
        worker.close()
    assert [api.status(job)["status"] for job in jobs] == [  # type: ignore[index]
        "COMPLETED", "COMPLETED", "IN_QUEUE"]
    assert api.taken == jobs[:2]
    assert worker.saw("recycle")
