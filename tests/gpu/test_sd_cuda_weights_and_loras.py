"""Loading straight to the GPU and LoRAs on CUDA, with the tiny pipelines: skipped without a GPU.

``load_pipeline(device="cuda")`` reads the safetensors files onto the GPU (diffusers'
``device_map="cuda"``): every weight is on CUDA when it returns, before any ``.to``. On CUDA in
fp16, a job after a LoRA job is still the base image bit for bit (PEFT's disabled layers call the
base layer alone).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion import pipelines
from adapters.stable_diffusion.families import detect_family
from adapters.stable_diffusion.lora_sources import LoraLibrary
from adapters.stable_diffusion.model import StableDiffusionModel
from tests.support.sd_batch_kit import pixels
from tests.support.sd_jobs import StepContext
from tests.support.sd_lora_kit import SMALL, lora_folder, same

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

JOB: dict[str, Any] = {"prompt": "a lighthouse", "seed": 2, **SMALL}


@pytest.mark.parametrize("family", ["sd", "flux"])
def test_the_weights_load_straight_onto_the_gpu(
    family: str, tiny_family_path: Callable[[str], Path]
) -> None:
    path = tiny_family_path(family)
    spec = detect_family(str(path))

    pipe = pipelines.load_pipeline(diffusers, spec, str(path), dtype=torch.float16,
                                   allow_download=False, device="cuda")

    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    assert modules
    for module in modules:
        assert {p.device.type for p in module.parameters()} == {"cuda"}


def test_the_workers_load_reads_the_weights_straight_onto_the_gpu(
    tiny_sd_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    model = StableDiffusionModel(str(tiny_sd_path), device="cuda")

    with caplog.at_level(logging.WARNING, logger="podworker.model"):
        model.load()

    assert not [r for r in caplog.records if "straight onto" in r.getMessage()]
    assert model.setup is not None and not model.setup.offloaded
    assert {p.device.type for p in model.pipeline.unet.parameters()} == {"cuda"}
    assert len(model.run(JOB, StepContext())) == 1


def test_on_cuda_the_job_after_a_lora_job_is_the_base_image_bit_for_bit(
    tiny_sd_path: Path, tiny_lora: Callable[..., Path], tmp_path: Path,
) -> None:
    folder = lora_folder(tmp_path / "loras", {"style": tiny_lora("sd", text_encoder=True)})
    model = StableDiffusionModel(str(tiny_sd_path), device="cuda",
                                 loras=LoraLibrary(folder, tmp_path / "cache"))
    model.load()
    base = pixels(model.run(JOB, StepContext()))

    styled = pixels(model.run({**JOB, "lora": "style"}, StepContext()))
    after = pixels(model.run(JOB, StepContext()))

    assert not same(styled, base)
    assert same(after, base)
