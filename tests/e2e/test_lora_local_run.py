"""LoRA through the real process: ``python -m app run`` with LORA_DIR set, as a user runs it on a
pod whose network volume holds LoRAs. A job naming a LoRA that is not there fails with one line
naming it; the jobs around it, with and without a LoRA, get their images."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("peft")


def test_a_local_run_applies_loras_from_lora_dir_and_a_missing_one_fails_only_its_job(
    tiny_sd_path: Path, tiny_lora: Callable[..., Path], tmp_path: Path,
) -> None:
    loras = tmp_path / "volume" / "loras"
    loras.mkdir(parents=True)
    shutil.copyfile(tiny_lora("sd"), loras / "pixel-art.safetensors")
    small = {"prompt": "a red kite", "width": 64, "height": 64, "num_inference_steps": 2,
             "seed": 7}
    jobs = [{"id": "styled", "input": {**small, "lora": "pixel-art", "lora_scale": 0.8}},
            {"id": "missing", "input": {**small, "loras": [{"name": "no-such-style"}]}},
            {"id": "plain", "input": small}]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUNPOD_", "WEBHOOK_", "MODEL", "LORA_"))}
    env.update({"PYTHONPATH": str(ROOT), "STATE_DIR": str(tmp_path / "state"),
                "TEST_LOCAL": "true", "MODEL": "stable_diffusion",
                "MODEL_PATH": str(tiny_sd_path), "MODEL_DEVICE": "cpu", "LORA_DIR": str(loras)})

    done = subprocess.run([sys.executable, "-m", "app", "run", "--test-input", "jobs.json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    assert done.returncode == 1, done.stdout + done.stderr  # one job failed
    results = {result["id"]: result for result in json.loads(done.stdout)}
    assert results["missing"]["error"] == ("invalid input: loras[0] 'no-such-style': no such "
                                           "LoRA in LORA_DIR")
    styled = Path(results["styled"]["output"][0]["image"]).read_bytes()
    plain = Path(results["plain"]["output"][0]["image"]).read_bytes()
    assert styled != plain
