"""A hub id as MODEL_PATH, found offline in a Hugging Face cache: RunPod's model cache (laid out as
its documentation shows, ``/runpod-volume/huggingface-cache/hub/models--<owner>--<name>/
snapshots/<commit>/``, here under a temporary folder named by MODEL_CACHE_DIRS), or HF_HOME's
(huggingface_hub's own layout: ``refs/main`` and snapshot files linked to blobs). The real
process, with HF_HUB_OFFLINE=1: ``doctor`` says which weights were found where, and a local run
makes images from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HUB_ID = "acme/tiny-sd"
COMMIT = "317b7eb96312eda0c431d1dab1af958a308cb35e"


def run_app(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("RUNPOD_", "WEBHOOK_", "MODEL", "HF_", "LORA_"))}
    full.update({"PYTHONPATH": str(ROOT), "STATE_DIR": str(cwd / "state"), "TEST_LOCAL": "true",
                 "MODEL": "stable_diffusion", "MODEL_PATH": HUB_ID, "MODEL_DEVICE": "cpu",
                 "HF_HUB_OFFLINE": "1", "HF_HOME": str(cwd / "empty-hf-home"),
                 "MODEL_CACHE_DIRS": str(cwd / "no-such-cache"), **env})
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=300)


def runpod_cache(root: Path, pipeline: Path) -> Path:
    """``root`` laid out as RunPod's model cache, holding ``pipeline`` as HUB_ID."""
    snapshot = root / "models--acme--tiny-sd" / "snapshots" / COMMIT
    shutil.copytree(pipeline, snapshot)
    return root


def hf_home(root: Path, pipeline: Path) -> Path:
    """``root`` as HF_HOME, holding ``pipeline`` as huggingface_hub stores a download."""
    repo = root / "hub" / "models--acme--tiny-sd"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for source in pipeline.rglob("*"):
        if source.is_file():
            data = source.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = repo / "snapshots" / COMMIT / source.relative_to(pipeline)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    return root


def test_doctor_finds_a_hub_id_in_a_runpod_laid_cache_offline_and_loads_it(
    tiny_sd_path: Path, tmp_path: Path,
) -> None:
    cache = runpod_cache(tmp_path / "runpod-volume" / "huggingface-cache" / "hub", tiny_sd_path)

    done = run_app(tmp_path, {"MODEL_CACHE_DIRS": f"{tmp_path / 'absent'},{cache}"}, "doctor")

    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"ok +weights +{HUB_ID} found in {cache} \(snapshot {COMMIT[:12]}, ",
                     done.stdout)
    assert re.search(r"ok +model ", done.stdout)


def test_a_local_run_makes_images_from_a_hub_id_in_hf_home_offline(
    tiny_sd_path: Path, tmp_path: Path,
) -> None:
    home = hf_home(tmp_path / "hf-home", tiny_sd_path)
    job = {"prompt": "a red kite", "width": 64, "height": 64, "num_inference_steps": 2,
           "seed": 1}
    (tmp_path / "jobs.json").write_text(json.dumps({"input": job}))

    done = run_app(tmp_path, {"HF_HOME": str(home)}, "run", "--test-input", "jobs.json")
    doctor = run_app(tmp_path, {"HF_HOME": str(home)}, "doctor")

    assert done.returncode == 0, done.stdout + done.stderr
    output = json.loads(done.stdout)["output"]
    assert Path(output[0]["image"]).is_file()
    assert f"weights of {HUB_ID} found in {home / 'hub'}" in done.stderr
    assert re.search(rf"ok +weights +{HUB_ID} found in {home / 'hub'} ", doctor.stdout)


@pytest.mark.parametrize("downloads", ["false", "true"])
def test_doctor_names_every_cache_it_searched_when_the_hub_id_is_in_none(
    downloads: str, tmp_path: Path,
) -> None:
    done = run_app(tmp_path, {"MODEL_ALLOW_DOWNLOAD": downloads}, "doctor")

    assert done.returncode == 1
    status = "warn" if downloads == "true" else "FAIL"
    searched = (f"{HUB_ID} is not a folder and is in no cache searched: "
                f"{tmp_path / 'no-such-cache'} (absent), {tmp_path / 'empty-hf-home' / 'hub'} "
                "(absent)")
    assert re.search(rf"{status} +weights +{re.escape(searched)}", done.stdout)
    assert re.search(r"FAIL +model ", done.stdout)
