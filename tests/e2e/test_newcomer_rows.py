"""The newcomer's path, row by row (issue 23's table), each as a user meets it: the real
command in a subprocess.

Rows with tests elsewhere: every family's local run (tests/integration/
test_local_run_every_family.py), worker-sdxl's job (tests/unit/test_sd_template_inputs.py,
tests/integration/test_sd_template_jobs.py), fake-api's export lines (tests/integration/
test_fakeplatform_client_api.py and tests/e2e/test_readme_path.py), a job without its
``input`` envelope (tests/unit/test_job.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from fakeplatform import FakeJobApiServer
from tests.support.ports import free_port
from tests.support.worker_process import WorkerProcess, worker_env

ROOT = Path(__file__).resolve().parents[2]
ECHO_JOB = {"id": "LOCAL-TEST", "input": {"prompt": "a lighthouse"}}


def clean_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUNPOD_", "WEBHOOK_", "MODEL", "BUCKET_", "SD_", "STORAGE"))}
    env.update({"PYTHONPATH": str(ROOT), "STATE_DIR": str(tmp_path / "state"),
                "HF_HUB_OFFLINE": "1", **settings})
    return env


def podworker(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=tmp_path,
                          env=clean_env(tmp_path, **settings), capture_output=True, text=True,
                          timeout=300)


def write_jobs(tmp_path: Path, jobs: object = ECHO_JOB) -> None:
    (tmp_path / "test_inputs.json").write_text(json.dumps(jobs))


# --- the README's commands with a Python that lacks the dependencies -----------------------
WITHOUT_TENACITY = ("import runpy, sys; sys.modules['tenacity'] = None; "  # as if not installed
                    "runpy.run_module('app', run_name='__main__', alter_sys=True)")


def test_a_python_without_the_dependencies_gets_one_line_saying_run_make_setup(
    tmp_path: Path,
) -> None:
    write_jobs(tmp_path)
    done = subprocess.run([sys.executable, "-c", WITHOUT_TENACITY, "run"], cwd=tmp_path,
                          env=clean_env(tmp_path, MODEL="echo"), capture_output=True, text=True,
                          timeout=120)

    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"podworker: the module 'tenacity' is not installed in this Python ({sys.executable}): "
        "run `make setup`, then use `.venv/bin/podworker` (or the make targets)")


def test_doctor_in_a_python_without_the_dependencies_says_run_make_setup(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_TENACITY, "doctor"], cwd=tmp_path,
                          env=clean_env(tmp_path, MODEL="echo"), capture_output=True, text=True,
                          timeout=120)

    assert done.returncode == 1
    assert "FAIL  storage        the module 'tenacity' is not installed in this Python" in (
        done.stdout)
    assert "-> run `make setup`, then use `.venv/bin/podworker`" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


# --- settings pasted without export: the worker says it is a local run, and why ------------
def test_settings_pasted_without_export_give_a_local_run_that_says_so(tmp_path: Path) -> None:
    write_jobs(tmp_path)
    script = textwrap.dedent(f"""\
        WEBHOOK_GET_WORK='http://127.0.0.1:9/v2/fake/job-take/$ID'
        {sys.executable} -m app run
    """)  # a shell variable, not exported: the worker never sees it
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path,
                          env=clean_env(tmp_path, MODEL="echo"), capture_output=True, text=True,
                          timeout=120)

    assert done.returncode == 0, done.stderr
    assert ("local run (no take webhook or JOB_QUEUE is set): the jobs in test_inputs.json"
            in done.stderr)
    assert "export WEBHOOK_GET_WORK (or RUNPOD_WEBHOOK_GET_JOB)" in done.stderr


# --- a worker pointed at the fake platform -------------------------------------------------
def test_a_pod_worker_logs_its_mode_and_the_same_id_the_platform_sees(tmp_path: Path) -> None:
    with FakeJobApiServer(long_poll_s=0.2) as api:
        env = worker_env(api, tmp_path / "state")
        del env["RUNPOD_POD_ID"]  # the worker makes its own id
        worker = WorkerProcess(env, tmp_path)
        try:
            job = api.submit({"n": 1})
            assert api.wait_for_results(1, timeout=60)
            worker.wait_for("mode")
            assert worker.terminate() == 0
        finally:
            worker.close()
        seen_by_platform = api.status(job, full=True)["workerId"]  # type: ignore[index]
        pinged_as = {name for name, _ in api.pings}
    [mode] = [e for e in worker.events() if e.get("event") == "mode"]
    logged_ids = {e["pod_id"] for e in worker.events() if "pod_id" in e}
    assert logged_ids == {seen_by_platform} and pinged_as <= {seen_by_platform}
    assert str(seen_by_platform).startswith("podworker-")
    assert mode["message"].startswith(
        f"pod mode: taking jobs from the job API at {api.url.removeprefix('http://')} as "
        f"worker {seen_by_platform}, images")


def test_a_pod_worker_without_model_path_is_told_about_the_tiny_pipeline(tmp_path: Path) -> None:
    with FakeJobApiServer(long_poll_s=0.2) as api:
        env = worker_env(api, tmp_path / "state", MODEL="stable_diffusion")
        done = subprocess.run([sys.executable, "-m", "app", "run"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    assert done.returncode == 2
    assert "invalid setting MODEL_PATH: required for MODEL=stable_diffusion" in done.stderr
    assert f"podworker make-tiny-model {tmp_path / 'state' / 'tiny-sd'}" in done.stderr


# --- settings typos -------------------------------------------------------------------------
def test_a_mistyped_setting_is_warned_about_at_start_with_a_did_you_mean(tmp_path: Path) -> None:
    write_jobs(tmp_path)
    done = podworker(tmp_path, "run", MODEL="echo", SD_PIPLINE="sdxl")

    assert done.returncode == 0, done.stderr
    assert ("unknown setting SD_PIPLINE in the environment is ignored: did you mean "
            "SD_PIPELINE?") in done.stderr


def test_doctor_reports_a_mistyped_name_in_the_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MODEL=echo\nMODLE_PATH=/models/sd\n")
    done = podworker(tmp_path, "doctor")

    assert done.returncode == 0, done.stdout  # a warning, not a failure
    assert ("warn  setting names  unknown setting MODLE_PATH in .env is ignored: did you mean "
            "MODEL_PATH?") in done.stdout


# --- weights that are not there -------------------------------------------------------------
def test_a_model_folder_that_is_not_there_exits_4_as_the_exit_code_table_says(
    tmp_path: Path,
) -> None:
    write_jobs(tmp_path)
    done = podworker(tmp_path, "run", MODEL_PATH="no-such-folder")

    assert done.returncode == 4, done.stderr
    assert json.loads(done.stdout)["error"].startswith("model could not be loaded: ")


def test_a_hub_id_that_cannot_be_downloaded_fails_at_once_each_warning_once(
    tmp_path: Path,
) -> None:
    closed = free_port()  # nothing listens there
    write_jobs(tmp_path)
    done = podworker(tmp_path, "run", MODEL_PATH="someone/not-cached", HF_HUB_OFFLINE="0",
                     MODEL_ALLOW_DOWNLOAD="true", HF_ENDPOINT=f"http://127.0.0.1:{closed}",
                     HF_HUB_CACHE=str(tmp_path / "hub-cache"))

    assert done.returncode == 4, done.stderr
    error = json.loads(done.stdout)["error"]
    assert "the Hugging Face Hub could not be reached" in error
    assert "SD_PIPELINE" not in error
    assert "Retrying" not in done.stderr  # the retrying download was never started
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), "a line was printed twice"


# --- what a local run prints, and where -----------------------------------------------------
PRINTING_MODEL = '''\
class Chatty:
    def load(self):
        print("loading the weights...")

    def run(self, job_input, ctx):
        print("denoising step 1 of 1")
        return {"answer": 42}


def build():
    return Chatty()
'''


def test_a_models_prints_stay_off_the_results_on_standard_output(tmp_path: Path) -> None:
    (tmp_path / "chatty.py").write_text(PRINTING_MODEL)
    write_jobs(tmp_path)
    done = podworker(tmp_path, "run", MODEL="chatty:build",
                     PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": "LOCAL-TEST", "output": {"answer": 42}}
    assert "loading the weights..." in done.stderr and "denoising step" in done.stderr


def test_a_local_run_says_when_it_replaces_an_earlier_runs_outputs(tmp_path: Path) -> None:
    earlier = tmp_path / "outputs" / "LOCAL-TEST"
    earlier.mkdir(parents=True)
    (earlier / "0.png").write_bytes(b"the first family's image")
    write_jobs(tmp_path)
    done = podworker(tmp_path, "run", MODEL="echo")

    assert done.returncode == 0, done.stderr
    assert (f"{earlier} holds an earlier run's outputs: this run replaces them (move them away, "
            "or set OUTPUT_DIR, to keep them)") in done.stderr


def test_a_job_sent_without_its_input_envelope_is_told_how_to_wrap_it(tmp_path: Path) -> None:
    write_jobs(tmp_path, {"id": "bare", "prompt": "a lighthouse", "width": 64})
    done = podworker(tmp_path, "run", MODEL="echo")

    assert done.returncode == 1
    assert json.loads(done.stdout)["error"] == (
        'invalid input: input must be a JSON object, got missing: its fields (prompt, width) '
        'belong inside "input": send {"input": {"prompt": ..., "width": ...}}, not {"prompt": '
        '..., "width": ...}')


# --- doctor on a pod ------------------------------------------------------------------------
def test_doctor_on_a_pod_warns_about_local_storage_and_a_pod_that_cannot_delete_itself(
    tmp_path: Path,
) -> None:
    with FakeJobApiServer(long_poll_s=0.2) as api:
        env = worker_env(api, tmp_path / "state", TERMINATE_IDLE_TIME="60000", STORAGE="local")
        del env["RUNPOD_POD_ID"]
        done = subprocess.run([sys.executable, "-m", "app", "doctor"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stdout  # warnings, not failures
    assert "warn  storage" in done.stdout and "deleted with the pod" in done.stdout
    assert ("warn  pod control    RUNPOD_API_KEY and RUNPOD_POD_ID not set: when idle, the "
            "worker exits but cannot delete its pod") in done.stdout
