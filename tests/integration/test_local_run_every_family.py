"""``make run`` for every family the README offers (``SD_PIPELINE=sdxl make run`` ...): the
shipped ``test_inputs.json`` runs on each family's tiny pipeline, exit 0 with its PNGs.

The file holds only fields every family takes (no ``negative_prompt``, which Flux refuses, and
no ``scheduler``, which SD3 and Flux refuse), so one file serves every family's local run.
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
FAMILIES = ["sd", "sdxl", "sd3", "flux", "flux-schnell"]

# each run imports torch and diffusers afresh in its subprocess: a minute or more when loaded
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_shipped_test_inputs_run_on_every_familys_tiny_pipeline(
    family: str, tmp_path: Path, tiny_family_path: Callable[[str], Path]
) -> None:
    from PIL import Image

    state = tmp_path / "state"
    state.mkdir()
    (state / f"tiny-{family}").symlink_to(tiny_family_path(family))  # the session's pipeline
    (tmp_path / "test_inputs.json").write_text((ROOT / "test_inputs.json").read_text())
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUNPOD_", "WEBHOOK_", "MODEL", "BUCKET_", "SD_", "INPUT_"))}
    env.update({"PYTHONPATH": str(ROOT), "STATE_DIR": str(state), "HF_HUB_OFFLINE": "1",
                "SD_PIPELINE": family})
    done = subprocess.run([sys.executable, "-m", "app", "run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert [item["seed"] for item in result["output"]] == [42, 43]
    for item in result["output"]:
        path = Path(item["image"])
        assert path.parent == tmp_path / "outputs" / "LOCAL-TEST"
        with Image.open(path) as image:
            assert (image.format, image.size) == ("PNG", (64, 64))
    assert f"using a tiny {family} pipeline" in done.stderr
