"""worker-sdxl's own job, through the real worker (a local run) on the tiny SDXL pipeline: it
runs, and the fields it sends that do nothing on a worker without a refiner are named in the
job's output, beside each image.

The job is ``examples/templates/worker-sdxl.json`` with its size and steps made small (1024x1024
in 25 steps takes minutes on a CPU, even on the tiny pipeline); every other field is sent as the
template sends it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_worker_sdxls_job_runs_and_its_output_notes_what_was_ignored(
    tmp_path: Path, tiny_family_path: Callable[[str], Path]
) -> None:
    job = json.loads((ROOT / "examples" / "templates" / "worker-sdxl.json").read_text())
    job["input"].update(width=64, height=64, num_inference_steps=2)
    (tmp_path / "sdxl-job.json").write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUNPOD_", "WEBHOOK_", "MODEL", "BUCKET_", "SD_", "INPUT_"))}
    env.update({"PYTHONPATH": str(ROOT), "STATE_DIR": str(tmp_path / "state"),
                "HF_HUB_OFFLINE": "1", "MODEL_PATH": str(tiny_family_path("sdxl")),
                "STORAGE": "base64"})

    done = subprocess.run([sys.executable, "-m", "app", "run", "--test-input", "sdxl-job.json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                          check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    [entry] = json.loads(done.stdout)["output"]
    assert entry["image"].startswith("data:image/png;base64,") and entry["seed"] == 42
    assert entry["notes"] == [
        "strength: ignored: it sets how far an image-to-image job moves from its image, and this "
        "job has none (RunPod's templates send it with text-to-image jobs too)",
        "refiner_inference_steps, high_noise_frac: ignored: this worker has no refiner loaded "
        "(SD_REFINER_PATH is not set)",
    ]
