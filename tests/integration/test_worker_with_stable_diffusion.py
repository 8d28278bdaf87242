"""The worker with the real diffusers adapter on the tiny pipeline: images, bad inputs, timeouts."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from domain.execution import DetachedContext
from domain.lifecycle import LifecyclePolicy
from tests.support.harness import make_harness

ROOT = Path(__file__).resolve().parents[2]


def local_run(cwd: Path, state: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUNPOD_", "WEBHOOK_", "MODEL", "BUCKET_"))}
    env.update({"PYTHONPATH": str(ROOT), "STATE_DIR": str(state),
                "OUTPUT_DIR": str(cwd / "outputs")})
    return subprocess.run([sys.executable, "-m", "app", "run"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_local_run_writes_the_requested_pngs_byte_identical_for_the_same_seed(
    tmp_path: Path, tiny_sd_path: Path
) -> None:
    from PIL import Image

    shipped = json.loads((ROOT / "test_inputs.json").read_text())
    state = tmp_path / "state"
    state.mkdir()
    (state / "tiny-sd").symlink_to(tiny_sd_path)  # reuse the session's tiny pipeline
    runs = []
    for name in ("first", "second"):
        cwd = tmp_path / name
        cwd.mkdir()
        (cwd / "test_inputs.json").write_text(json.dumps(shipped))
        done = local_run(cwd, state)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        refs = [Path(item["image"]) for item in result["output"]]
        assert [item["seed"] for item in result["output"]] == [42, 43]
        assert len(refs) == shipped["input"]["num_outputs"]
        for ref in refs:
            assert ref.parent == cwd / "outputs" / "LOCAL-TEST"
            with Image.open(ref) as image:
                assert image.format == "PNG"
                assert image.size == (shipped["input"]["width"], shipped["input"]["height"])
        runs.append([ref.read_bytes() for ref in refs])
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][1]  # seed 42 and seed 43 differ


def test_three_bad_fields_get_one_error_naming_all_three_and_the_worker_goes_on(
    tmp_path: Path, tiny_sd_model: Any
) -> None:
    h = make_harness(tmp_path, model=tiny_sd_model).start()
    h.api.submit({"prompt": "x", "width": 100, "num_outputs": 99, "scheduler": "FOO"},
                 job_id="bad")
    h.api.submit({"prompt": "a boat", "width": 64, "height": 64, "num_inference_steps": 2,
                  "seed": 1}, job_id="good")
    assert h.api.wait_for_results(2, timeout=120)
    h.stop()
    error = h.api.results["bad"].error or ""
    assert error.startswith("invalid input: ")
    for field in ("width", "num_outputs", "scheduler"):
        assert f"{field}:" in error, error
    assert error.count(";") == 2
    good = h.api.results["good"].output
    assert [item["seed"] for item in good] == [1]
    assert Path(good[0]["image"]).read_bytes().startswith(b"\x89PNG")


def test_a_timeout_below_the_jobs_length_stops_it_at_a_denoising_step_and_the_next_job_runs(
    tmp_path: Path, tiny_sd_model: Any
) -> None:
    from PIL import Image

    # The timeout is sized from this machine's own speed: eight times a whole short job (so a
    # loaded machine still finishes it in time), and far below 500 steps.
    short = {"prompt": "short", "width": 64, "height": 64, "num_inference_steps": 2}
    started = time.monotonic()
    tiny_sd_model.run(dict(short), DetachedContext())
    timeout_s = max(0.3, 8 * (time.monotonic() - started))
    policy = LifecyclePolicy(idle_ttl=None, execution_timeout=timeout_s)
    h = make_harness(tmp_path, model=tiny_sd_model, policy=policy).start()
    h.api.submit({"prompt": "long", "width": 64, "height": 64, "num_inference_steps": 500},
                 job_id="long")
    h.api.submit(short, job_id="short")
    assert h.api.wait_for_results(2, timeout=120)
    h.stop()
    assert h.api.results["long"].error == f"execution timeout after {round(timeout_s * 1000)} ms"
    steps = [u["step"] for job_id, u in h.api.progress if job_id == "long"]
    assert steps and max(steps) < 500  # it stopped part-way, at a step
    ref = h.api.results["short"].output[0]["image"]
    with Image.open(io.BytesIO(Path(ref).read_bytes())) as image:
        assert image.size == (64, 64)
