"""The local run (``python -m app run``) with each family's tiny pipeline, in a subprocess.

The worker is the real one (settings, composition root, model thread, local storage): with
``MODEL_PATH`` naming a tiny SD3 or Flux pipeline, and with no ``MODEL_PATH`` but
``SD_PIPELINE=sdxl`` or ``flux-schnell`` (the local run's tiny pipeline of that family, built
under ``STATE_DIR``), it writes the job's PNGs and prints their paths with their seeds. SD
1.x's local run is tests/integration/test_worker_with_stable_diffusion.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOB: dict[str, Any] = {"prompt": "a lighthouse on a cliff at sunset", "width": 64, "height": 64,
                       "num_outputs": 2, "num_inference_steps": 3, "seed": 42}


def local_run(cwd: Path, job_input: dict[str, Any], **settings: str) -> Any:
    return local_run_jobs(cwd, {"LOCAL-TEST": job_input}, **settings)


def local_run_jobs(cwd: Path, jobs: dict[str, dict[str, Any]], **settings: str) -> Any:
    """The local run of ``jobs`` (id -> input) in ``cwd``: its printed result, or results."""
    tests = [{"id": job_id, "input": job_input} for job_id, job_input in jobs.items()]
    (cwd / "test_inputs.json").write_text(json.dumps(tests[0] if len(tests) == 1 else tests))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUNPOD_", "WEBHOOK_", "MODEL", "BUCKET_", "SD_", "INPUT_"))}
    env.update({"PYTHONPATH": str(ROOT), "OUTPUT_DIR": str(cwd / "outputs"),
                "HF_HUB_OFFLINE": "1", **settings})
    done = subprocess.run([sys.executable, "-m", "app", "run"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def assert_pngs(
    result: Any, cwd: Path, seeds: list[int], size: tuple[int, int], job_id: str = "LOCAL-TEST"
) -> list[bytes]:
    from PIL import Image

    assert [item["seed"] for item in result["output"]] == seeds
    files = [Path(item["image"]) for item in result["output"]]
    for path in files:
        assert path.parent == cwd / "outputs" / job_id
        with Image.open(path) as image:
            assert (image.format, image.size) == ("PNG", size)
    return [path.read_bytes() for path in files]


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_local_run_with_model_path_of_a_family_writes_its_pngs(
    family: str, tmp_path: Path, tiny_family_path: Callable[[str], Path]
) -> None:
    result = local_run(tmp_path, JOB, MODEL_PATH=str(tiny_family_path(family)),
                       STATE_DIR=str(tmp_path / "state"))

    pngs = assert_pngs(result, tmp_path, [42, 43], (64, 64))
    assert pngs[0] != pngs[1]


def test_the_local_run_uses_the_tiny_pipeline_of_the_family_sd_pipeline_names(
    tmp_path: Path, tiny_family_path: Callable[[str], Path]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "tiny-sdxl").symlink_to(tiny_family_path("sdxl"))  # the session's, not a rebuild
    runs = []
    for name in ("first", "second"):
        cwd = tmp_path / name
        cwd.mkdir()
        result = local_run(cwd, JOB, SD_PIPELINE="sdxl", STATE_DIR=str(state))
        runs.append(assert_pngs(result, cwd, [42, 43], (64, 64)))
    assert runs[0] == runs[1]


def test_sd_pipeline_flux_schnell_builds_the_tiny_schnell_pipeline_and_runs_its_four_steps(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    job: dict[str, Any] = {"prompt": "a lighthouse on a cliff", "width": 64, "height": 64,
                           "seed": 11}
    jobs = {"DEFAULT": job, "FOUR": {**job, "num_inference_steps": 4},
            "FIVE": {**job, "num_inference_steps": 5}}

    results = local_run_jobs(tmp_path, jobs, SD_PIPELINE="flux-schnell", STATE_DIR=str(state))

    transformer = json.loads((state / "tiny-flux-schnell" / "transformer" / "config.json")
                             .read_text())
    assert transformer["guidance_embeds"] is False  # the tiny schnell, built by the run
    pngs = {result["id"]: assert_pngs(result, tmp_path, [11], (64, 64), result["id"])
            for result in results}
    assert list(pngs) == list(jobs)
    assert pngs["DEFAULT"] == pngs["FOUR"]  # a job that names no steps runs schnell's 4
    assert pngs["FOUR"] != pngs["FIVE"]


def test_a_local_img2img_job_from_base64_writes_a_png_of_the_init_images_size(
    tmp_path: Path, tiny_family_path: Callable[[str], Path]
) -> None:
    from tests.support.sd_jobs import box_mask, data_url, noise_image

    job = {"prompt": "a red barn", "num_inference_steps": 4, "seed": 9,
           "init_image": data_url(noise_image((96, 64))),
           "mask": data_url(box_mask((96, 64), (16, 16, 64, 48)))}
    result = local_run(tmp_path, job, MODEL_PATH=str(tiny_family_path("flux")),
                       STATE_DIR=str(tmp_path / "state"))
    assert_pngs(result, tmp_path, [9], (96, 64))
