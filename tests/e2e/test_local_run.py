"""The real process: ``python -m app run`` in local mode, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.harness import wait_until

ROOT = Path(__file__).resolve().parents[2]


def run_app(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "WEBHOOK_"))}
    full_env.update({"PYTHONPATH": str(ROOT), "STATE_DIR": str(tmp_path / "state"), **env})
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=tmp_path, env=full_env,
        capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def shipped_inputs(tmp_path: Path) -> Path:
    (tmp_path / "test_inputs.json").write_text((ROOT / "test_inputs.json").read_text())
    return tmp_path


def test_local_run_of_the_shipped_inputs_with_echo_prints_the_input_and_exits_0(
    shipped_inputs: Path,
) -> None:
    done = run_app(shipped_inputs, {"MODEL": "echo"}, "run")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    shipped = json.loads((ROOT / "test_inputs.json").read_text())
    assert result == {"id": "LOCAL-TEST", "output": shipped["input"]}


def test_local_run_with_a_failing_model_prints_the_error_and_exits_1(shipped_inputs: Path) -> None:
    done = run_app(shipped_inputs, {"MODEL": "echo", "ECHO_FAIL": "true"}, "run")
    assert done.returncode == 1
    assert json.loads(done.stdout) == {
        "id": "LOCAL-TEST", "error": "RuntimeError: echo model set to fail (ECHO_FAIL=true)"
    }


def test_test_input_names_another_file_with_several_jobs(tmp_path: Path) -> None:
    jobs = [{"id": "a", "input": {"n": 1}}, {"input": {"n": 2}}]
    (tmp_path / "mine.json").write_text(json.dumps(jobs))
    done = run_app(tmp_path, {"MODEL": "echo", "TEST_LOCAL": "true"}, "run", "--test-input",
                   "mine.json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"id": "a", "output": {"n": 1}}, {"id": "LOCAL-TEST-2", "output": {"n": 2}}
    ]


def test_a_bad_setting_exits_2_with_one_line_naming_the_variable(shipped_inputs: Path) -> None:
    done = run_app(shipped_inputs, {"MODEL": "echo", "EXECUTION_TIMEOUT": "soon"}, "run")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("podworker: invalid setting EXECUTION_TIMEOUT")


def test_a_missing_test_input_file_exits_2(tmp_path: Path) -> None:
    done = run_app(tmp_path, {"MODEL": "echo"}, "run")
    assert done.returncode == 2
    assert "test_inputs.json not found" in done.stderr


def test_help_is_available_on_every_command(tmp_path: Path) -> None:
    for args in (["--help"], ["run", "--help"], ["make-tiny-model", "--help"], ["doctor", "--help"],
                 ["fake-api", "--help"]):
        done = run_app(tmp_path, {}, *args)
        assert done.returncode == 0 and "usage:" in done.stdout


def start_slow_local_job(tmp_path: Path, sleep_ms: int) -> tuple[subprocess.Popen[str], Path]:
    """A local run of one echo job taking ``sleep_ms``, returned once the job is on the model."""
    (tmp_path / "test_inputs.json").write_text(
        json.dumps({"id": "slow", "input": {"_echo": {"sleep_ms": sleep_ms}}})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "WEBHOOK_"))}
    env.update({"PYTHONPATH": str(ROOT), "MODEL": "echo", "STATE_DIR": str(tmp_path / "s"),
                "LOG_FORMAT": "json"})
    log_path = tmp_path / "stderr.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "app", "run"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=log_file, text=True)
    wait_until(lambda: '"job_taken"' in log_path.read_text(), timeout=30, what="job start")
    return proc, log_path


def test_sigterm_mid_job_still_prints_that_jobs_result_and_exits_0(tmp_path: Path) -> None:
    proc, log_path = start_slow_local_job(tmp_path, 1500)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert json.loads(stdout) == {"id": "slow", "output": {}}
    assert "SIGTERM received" in log_path.read_text()


def test_a_second_signal_stops_at_once_with_code_130(tmp_path: Path) -> None:
    proc, log_path = start_slow_local_job(tmp_path, 60_000)
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: "SIGINT received" in log_path.read_text(), what="the first signal")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "SIGINT again: stopping now" in log_path.read_text()
