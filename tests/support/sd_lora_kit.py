"""Helpers for the LoRA tests: a Stable Diffusion model with a LoRA folder (and a fetcher), a
job's pixels, and a LoRA folder filled with tiny LoRAs under the names the tests give."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from adapters.http.safe_fetch import SafeFetcher
from adapters.stable_diffusion.lora_sources import LoraLibrary, LoraLimits
from adapters.stable_diffusion.model import StableDiffusionModel
from tests.support.sd_batch_kit import pixels
from tests.support.sd_jobs import StepContext

SMALL: dict[str, Any] = {"width": 64, "height": 64, "num_inference_steps": 2}


def lora_folder(root: Path, files: dict[str, Path]) -> Path:
    """``root`` holding a copy of each file under its name (``.safetensors`` added)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        target = root / (name if name.endswith(".safetensors") else f"{name}.safetensors")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return root


def lora_model(pipeline: Path, folder: Path | None, *, cache_dir: Path,
               fetcher: SafeFetcher | None = None, lora_limits: LoraLimits | None = None,
               **options: Any) -> StableDiffusionModel:
    """A loaded CPU model whose jobs may name LoRAs in ``folder`` (and URLs with ``fetcher``)."""
    library = LoraLibrary(folder, cache_dir, lora_limits or LoraLimits(), fetcher)
    model = StableDiffusionModel(str(pipeline), device="cpu", loras=library,
                                 batch_wait_s=0.0, **options)
    model.load()
    return model


def run_pixels(model: StableDiffusionModel, job: dict[str, Any]) -> list[Any]:
    """The job's images as int16 arrays (one per output)."""
    return pixels(model.run(job, StepContext()))


def same(first: list[Any], second: list[Any]) -> bool:
    """Bit for bit the same images."""
    import numpy as np

    return len(first) == len(second) and all(
        np.array_equal(a, b) for a, b in zip(first, second, strict=True))
