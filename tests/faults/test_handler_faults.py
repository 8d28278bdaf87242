"""A RunPod SDK handler's finished result under a platform that refuses it, then a SIGKILL.

The SDK posts a result three times and then drops it (REFERENCE.md); a worker killed meanwhile
has lost it for good. Under podworker (``python -m app handler``) the result is in the outbox on
disk when the handler returns, so the restarted worker delivers it, once. Both run the same
unchanged handler file (``tests/handlers/minimal.py``) from ``.venv-runpod``.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from adapters.outbox.journal import peek
from fakeplatform import FakeJobApiServer
from tests.support.handler_runs import API_KEY, HandlerRun
from tests.support.harness import eventually
from tests.support.official_runpod import runpod_python

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ANSWER = {"output": {"greeting": "Hello, Ada!", "job_id": "kept-1"}}


@pytest.fixture(scope="module")
def python() -> Path:
    return runpod_python()


def test_a_handlers_finished_result_survives_sigkill_while_job_done_answers_500_then_a_restart(
    python: Path, tmp_path: Path,
) -> None:
    with FakeJobApiServer(long_poll_s=0.5, api_key=API_KEY) as platform:
        platform.inject_fault("done", status=500, count=100_000)
        platform.submit({"name": "Ada"}, job_id="kept-1")
        first = HandlerRun("podworker", python, platform, "minimal.py", tmp_path)
        outbox = tmp_path / "state" / "outbox"
        try:
            assert eventually(lambda: [r.job_id for r in peek(outbox)] == ["kept-1"], 60), (
                first.log()[-3000:])
            assert eventually(lambda: platform.faults_served >= 1, 30)  # job-done refused it
        finally:
            assert first.kill() == -signal.SIGKILL

        platform.clear_faults()
        second = HandlerRun("podworker", python, platform, "minimal.py", tmp_path)
        try:
            assert platform.wait_until(lambda s: "kept-1" in s.results, 60), second.log()[-3000:]
            assert platform.results["kept-1"] == ANSWER
            assert platform.status("kept-1") == {"id": "kept-1", "status": "COMPLETED",
                                                 "output": ANSWER["output"]}
        finally:
            assert second.stop() == 0
        assert platform.duplicates == []
        assert peek(outbox) == []


def test_the_sdk_worker_loses_that_result(python: Path, tmp_path: Path) -> None:
    with FakeJobApiServer(long_poll_s=0.5, api_key=API_KEY) as platform:
        platform.inject_fault("done", status=500, count=100_000)
        platform.submit({"name": "Ada"}, job_id="kept-1")
        first = HandlerRun("sdk", python, platform, "minimal.py", tmp_path)
        try:
            first.wait_for_log("Failed to return job results")  # its three tries are spent
        finally:
            assert first.kill() == -signal.SIGKILL

        platform.clear_faults()
        second = HandlerRun("sdk", python, platform, "minimal.py", tmp_path)
        try:
            pings = len(platform.pings)
            # the restarted worker is up and pinging, with nothing to deliver
            assert platform.wait_until(lambda s: len(s.pings) >= pings + 3, 60), second.log()
            assert "kept-1" not in platform.results
            assert platform.status("kept-1") == {"id": "kept-1", "status": "IN_PROGRESS"}
        finally:
            second.stop()
