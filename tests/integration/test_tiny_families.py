"""Tiny SDXL, SD3 and Flux (dev and schnell) pipelines: built offline, loaded back as real
weights, and working.

Each family is built once per session (tests/support/tiny_sd.py) and loaded with its own
class's ``from_pretrained(local_files_only=True)``; jobs are 64x64 with a few steps, so each
family costs seconds on a CPU. The image-to-image and inpainting variants come from diffusers'
AutoPipelines (``from_pipe``), the way the model adapter is meant to reach them.
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

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
PIL_Image = pytest.importorskip("PIL.Image")

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = {
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
    "flux-schnell": "FluxPipeline",
}
SMALL: dict[str, Any] = {"prompt": "a photo of a cat", "width": 64, "height": 64,
                         "num_inference_steps": 3}


def load(path: Path) -> Any:
    class_name = json.loads((path / "model_index.json").read_text())["_class_name"]
    pipe = getattr(diffusers, class_name).from_pretrained(str(path), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pixels(image: Any) -> bytes:
    return bytes(image.tobytes())


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def pipe(family: str, tiny_family_path: Callable[[str], Path]) -> Any:
    return load(tiny_family_path(family))


def test_each_family_is_saved_as_its_own_pipeline_class_in_a_few_megabytes(
    family: str, tiny_family_path: Callable[[str], Path]
) -> None:
    path = tiny_family_path(family)
    index = json.loads((path / "model_index.json").read_text())

    assert index["_class_name"] == FAMILIES[family]
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert size < 8_000_000
    assert not any(p.name.startswith(".") for p in path.parent.iterdir())  # no staging left


def test_each_family_makes_the_same_image_for_the_same_seed_and_another_for_another(
    pipe: Any,
) -> None:
    def image(seed: int) -> Any:
        generator = torch.Generator().manual_seed(seed)
        return pipe(**SMALL, generator=generator).images[0]

    first, again, other = image(7), image(7), image(8)

    assert first.size == (64, 64)
    assert pixels(first) == pixels(again)
    assert pixels(first) != pixels(other)


def test_each_family_loads_through_the_text_to_image_autopipeline(
    family: str, tiny_family_path: Callable[[str], Path]
) -> None:
    pipe = diffusers.AutoPipelineForText2Image.from_pretrained(
        str(tiny_family_path(family)), local_files_only=True
    )
    assert type(pipe).__name__ == FAMILIES[family]


@pytest.mark.parametrize("task", ["image2image", "inpainting"])
def test_each_family_has_img2img_and_inpainting_from_the_same_weights(pipe: Any, task: str) -> None:
    auto = {"image2image": diffusers.AutoPipelineForImage2Image,
            "inpainting": diffusers.AutoPipelineForInpainting}[task]
    variant = auto.from_pipe(pipe)
    variant.set_progress_bar_config(disable=True)
    init = PIL_Image.new("RGB", (64, 64), (200, 30, 30))
    extra: dict[str, Any] = {}
    if task == "inpainting":
        mask = PIL_Image.new("L", (64, 64), 0)
        mask.paste(255, (16, 16, 48, 48))
        extra["mask_image"] = mask

    result = variant(**SMALL, image=init, strength=0.8,
                     generator=torch.Generator().manual_seed(1), **extra).images[0]

    assert result.size == (64, 64)


def test_flux_dev_and_schnell_differ_in_their_transformer_and_are_told_apart_by_it(
    tiny_family_path: Callable[[str], Path],
) -> None:
    from adapters.stable_diffusion.families import FLUX_SCHNELL, SPECS, Family, detect_family

    dev, schnell = tiny_family_path("flux"), tiny_family_path("flux-schnell")

    def transformer(path: Path) -> Any:
        return json.loads((path / "transformer" / "config.json").read_text())

    assert (transformer(dev)["guidance_embeds"], transformer(schnell)["guidance_embeds"]) == (
        True, False)
    assert (detect_family(dev), detect_family(schnell)) == (SPECS[Family.FLUX], FLUX_SCHNELL)
    assert load(schnell).transformer.config.guidance_embeds is False


def test_the_command_line_builds_flux_schnell_with_no_network(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           # a proxy that refuses every connection: any download attempt would fail loudly
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    target = tmp_path / "flux-schnell"

    done = subprocess.run(
        [sys.executable, "-m", "app", "make-tiny-model", str(target), "--family", "flux-schnell"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(target)
    assert json.loads((target / "model_index.json").read_text())["_class_name"] == "FluxPipeline"
    config = json.loads((target / "transformer" / "config.json").read_text())
    assert config["guidance_embeds"] is False


def test_the_command_line_offers_every_tiny_family_and_no_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from adapters.stable_diffusion.tiny import FAMILIES
    from app.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["make-tiny-model", str(tmp_path / "x"), "--family", "sd4"])

    assert exited.value.code == 2
    offered = ", ".join(repr(name) for name in FAMILIES)
    assert f"(choose from {offered})" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_an_unknown_family_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from adapters.stable_diffusion.tiny import make_tiny_model

    with pytest.raises(ValueError, match="unknown family 'sd4'"):
        make_tiny_model(tmp_path / "x", family="sd4")
    assert not (tmp_path / "x").exists()
