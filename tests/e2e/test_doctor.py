"""``python -m app doctor``: exit 0 on a good configuration, non-zero naming what failed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fakeplatform import FakeJobApiServer
from tests.support.worker_process import JOB_API_KEY, worker_env


def doctor(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", "doctor"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_doctor_passes_on_a_good_configuration_and_takes_no_job(tmp_path: Path) -> None:
    with FakeJobApiServer(long_poll_s=0.2, api_key=JOB_API_KEY) as api:
        job = api.submit({"must": "stay queued"})
        done = doctor(worker_env(api, tmp_path / "state"), tmp_path)
        assert api.taken == []
        assert api.status(job)["status"] == "IN_QUEUE"  # type: ignore[index]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all checks passed" in done.stdout
    assert "ok    job API" in done.stdout
    assert JOB_API_KEY not in done.stdout + done.stderr


def test_doctor_fails_and_says_which_check_when_the_job_api_is_down(tmp_path: Path) -> None:
    api = FakeJobApiServer(long_poll_s=0.2, api_key=JOB_API_KEY).start()
    env = worker_env(api, tmp_path / "state")
    api.stop()
    done = doctor(env, tmp_path)
    assert done.returncode == 1
    assert "FAIL  job API" in done.stdout
    assert "failed: job API" in done.stdout


def test_doctor_reports_a_bad_setting_by_name(tmp_path: Path) -> None:
    with FakeJobApiServer(long_poll_s=0.2) as api:
        env = worker_env(api, tmp_path / "state", EXECUTION_TIMEOUT="later")
        done = doctor(env, tmp_path)
    assert done.returncode == 1
    assert "FAIL  settings" in done.stdout and "EXECUTION_TIMEOUT" in done.stdout
