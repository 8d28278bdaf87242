"""``python -m app handler handler.py``, the command a handler's Dockerfile names: its local run
(no webhooks: the SDK's ``test_input.json`` or ``--test_input``) and its start-up errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.handler_runs import CORPUS
from tests.support.official_runpod import runpod_python

ROOT = Path(__file__).resolve().parents[2]


def run(python: Path | str, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "WEBHOOK_"))}
    env.update({"PYTHONPATH": str(ROOT), "STATE_DIR": str(folder / "state")})
    return subprocess.run([str(python), "-m", "app", "handler", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


def test_without_the_runpod_package_it_stops_at_once_with_one_line_saying_so(
    tmp_path: Path,
) -> None:
    shutil.copy(CORPUS / "minimal.py", tmp_path)
    done = run(sys.executable, tmp_path, "minimal.py")  # podworker's .venv has no runpod

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "podworker: running a RunPod handler needs RunPod's SDK, the 'runpod' package, in this "
        "Python environment (pip install runpod): it could not be imported (No module named "
        "'runpod')"]


def test_a_local_run_reads_test_input_json_and_prints_the_result(tmp_path: Path) -> None:
    python = runpod_python()
    shutil.copy(CORPUS / "minimal.py", tmp_path)
    (tmp_path / "test_input.json").write_text(json.dumps({"input": {"name": "Ada"}}))

    done = run(python, tmp_path, "minimal.py")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "id": "local_test", "output": {"greeting": "Hello, Ada!", "job_id": "local_test"}}


@pytest.mark.parametrize(("job_input", "code"), [({"number": 3}, 0), ({}, 1)])
def test_test_input_on_the_command_line_runs_that_job_and_a_failure_exits_1(
    tmp_path: Path, job_input: dict[str, int], code: int,
) -> None:
    python = runpod_python()
    shutil.copy(CORPUS / "raises.py", tmp_path)

    done = run(python, tmp_path, "raises.py", "--test_input", json.dumps({"input": job_input}))

    assert done.returncode == code, done.stderr
    printed = json.loads(done.stdout)
    expected = ({"output": {"square": 9}} if code == 0
                else {"error": "ValueError: number is required"})
    assert printed == {"id": "local_test", **expected}
    if code:
        assert "Traceback (most recent call last)" in done.stderr  # the log has the traceback
