"""The README's "From a fresh clone" block, run as written, read from the README itself (so the
README cannot drift): set-up, the local run, ``fake-api``, a worker started from the lines it
printed, RunPod's own client's ``run_sync`` from the client lines it printed, ``doctor`` in the
worker's shell.

"In this folder" is a fresh folder holding what a clone has (the Makefile, ``pyproject.toml``,
``test_inputs.json``, ``examples/``) and the virtual environments ``make setup`` made in this
checkout (``.venv``, ``.venv-runpod``), so the commands write their ``.podworker/`` and
``outputs/`` there, not into the checkout, and tests in parallel stay apart. The printed lines
are pasted into ``bash`` as printed.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.harness import wait_until
from tests.support.official_runpod import runpod_python

ROOT = Path(__file__).resolve().parents[2]
CLONE_FILES = ("Makefile", "pyproject.toml", "examples", "README.md")
VENVS = (".venv", ".venv-runpod")  # what `make setup` makes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def readme_steps() -> list[str]:
    """The block's lines, trailing comments cut: commands, and ``#`` lines saying what to paste."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- newcomer-path:start -->\n```sh\n(.*?)```\n<!-- newcomer-path:end -->",
                      text, re.S)
    assert block is not None, "the README's newcomer-path block is gone"
    steps = []
    for line in block.group(1).splitlines():
        if line.startswith("#"):
            steps.append(line)
        elif line.strip():
            steps.append(re.sub(r"\s+#\s.*$", "", line).strip())
    return steps


def a_fresh_clone(folder: Path) -> Path:
    venv = ROOT / ".venv"
    if Path(sys.prefix).resolve() != venv.resolve():
        pytest.skip("the README's commands use the .venv that `make setup` makes; these tests "
                    f"run in {sys.prefix}")
    folder.mkdir()
    for name in (*CLONE_FILES, *VENVS):
        if (ROOT / name).exists():
            (folder / name).symlink_to(ROOT / name)
    (folder / "test_inputs.json").write_text((ROOT / "test_inputs.json").read_text())
    stamps = [f"{name}/.installed" for name in VENVS]
    stale = subprocess.run(["make", "-q", *stamps], cwd=folder, capture_output=True, timeout=60)
    if stale.returncode != 0:
        pytest.skip("a venv is older than pyproject.toml or missing: `make setup` would build "
                    "it under the other tests (make test builds them first)")
    return folder


def shell_env() -> dict[str, str]:
    """A new shell's environment: none of podworker's settings or RunPod's names set."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUNPOD_", "WEBHOOK_", "MODEL", "BUCKET_", "SD_", "STORAGE",
                                "TEST_", "STATE_DIR", "OUTPUT_DIR", "AI_API_KEY",
                                "PYTHONPATH", "VIRTUAL_ENV"))}
    return {**env, "HF_HUB_OFFLINE": "1"}


def run(command: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=shell_env(), capture_output=True,
                          text=True, timeout=timeout)


def printed_blocks(printed: list[str]) -> tuple[list[str], list[str]]:
    """The worker's lines and the client's, as ``fake-api`` printed them for pasting."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in printed:
        if line.startswith("# A worker"):
            current = blocks.setdefault("worker", [])
        elif line.startswith("# A client"):
            current = blocks.setdefault("client", [])
        elif line.startswith("#"):
            current = None
        elif current is not None:
            current.append(line)
    return blocks["worker"], blocks["client"]


def test_the_readmes_commands_run_as_written_from_a_fresh_clone(tmp_path: Path) -> None:
    runpod_python()  # RunPod's client: needed in CI, else the test skips without it
    clone = a_fresh_clone(tmp_path / "clone")
    steps = readme_steps()
    kinds = ["fake-api" if "podworker fake-api" in s else "worker" if "worker lines" in s
             else "client" if "client lines" in s else "doctor" if "podworker doctor" in s
             else "command" for s in steps]
    assert kinds == ["command", "command", "fake-api", "worker", "client", "doctor"], steps
    setup, local_run = steps[0], steps[1]

    done = run(setup, clone)
    assert done.returncode == 0, done.stdout + done.stderr

    done = run(local_run, clone)
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"seed": 42' in done.stdout and (clone / "outputs" / "LOCAL-TEST" / "0.png").is_file()
    assert "local run (no take webhook or JOB_QUEUE is set)" in done.stderr

    fake_out = clone / "fake-api.out"
    with fake_out.open("w") as out:
        fake_api = subprocess.Popen(["bash", "-c", f"exec {steps[2]}"], cwd=clone,
                                    env=shell_env(), stdout=out, stderr=subprocess.STDOUT)
    worker = None
    try:
        wait_until(lambda: ("runpod_client.py" in fake_out.read_text()
                            or fake_api.poll() is not None), timeout=60, what="fake-api's lines",
                   interval=0.05)
        worker_lines, client_lines = printed_blocks(fake_out.read_text().splitlines())
        assert worker_lines[-1].startswith(".venv/bin/podworker ")
        assert all(line.startswith("export ") for line in worker_lines[:-1] + client_lines[:-1])

        worker_log = clone / "worker.log"
        with worker_log.open("w") as log:
            worker = subprocess.Popen(["bash", "-c", "\n".join(worker_lines)], cwd=clone,
                                      env=shell_env(), stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        wait_until(lambda: ("result delivered" in worker_log.read_text()
                            or worker.poll() is not None),
                   timeout=300, what="the worker to answer the queued job", interval=0.05)
        assert "pod mode: taking jobs from the job API" in worker_log.read_text()

        done = run("\n".join(client_lines), clone, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "saved client-0.png" in done.stdout and "saved client-1.png" in done.stdout
        png = (clone / "client-0.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), base64.b64encode(png[:16])

        done = run("\n".join([*worker_lines[:-1], steps[5]]), clone)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ok    job API" in done.stdout and "all checks passed" in done.stdout
        assert "ok    setting names" in done.stdout
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)  # the shell and the worker it started
            worker.wait(60)
        fake_api.send_signal(signal.SIGTERM)
        fake_api.wait(30)
