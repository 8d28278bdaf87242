"""Which Stable Diffusion jobs can share one pipeline call, and the call that serves them all.

Jobs share a call (``SD_BATCH_MAX`` > 1, see :mod:`.device_queue`) when everything the call takes
once is equal: their :func:`batch_key` holds the task (text2img, img2img, inpaint), the
output size, the steps, the scheduler, the guidance, the prompt strength, and whether a negative
prompt is given (SDXL encodes a missing one as zeros, a given one as text: the two never mix),
and for SDXL whether the refiner runs, with its steps and ``high_noise_frac``.
What each image takes on its own is given per row (:func:`batch_arguments`): its prompt, its
negative prompt, its generator (so its seed), its init image and mask.

**Same seeds, same images.** A job's images come from the same per-image generators, prompts and
inputs whether it runs alone or in a batch, so they are the same images, up to float rounding:
PyTorch does not promise bitwise-equal results across batch sizes (oneDNN and cuDNN pick
kernels by shape). Measured on the tiny pipelines of every family (CPU, float32): at most one
level in 255, on a few pixels of 64x64; ``tests/integration/test_sd_batching.py`` holds it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from adapters.stable_diffusion.families import FamilySpec
from adapters.stable_diffusion.job_images import JobImages
from adapters.stable_diffusion.lora_sources import ResolvedLora
from adapters.stable_diffusion.pipelines import call_arguments
from adapters.stable_diffusion.schema import FamilyInput


@dataclass(frozen=True)
class Work:
    """One job, ready for the device: its inputs, its images, its seeds, the steps of each
    pipeline call it makes (``stages``: one call's, or the base's then the refiner's), and its
    checked LoRA files with their scales."""

    params: FamilyInput
    images: JobImages
    seeds: list[int]
    stages: tuple[int, ...]
    loras: tuple[ResolvedLora, ...] = ()

    @property
    def steps(self) -> int:
        """Every step the job runs, all its calls together."""
        return sum(self.stages)


def batch_key(work: Work) -> Hashable:
    """Equal for jobs that may share one pipeline call (see the module docstring)."""
    params, images = work.params, work.images
    return (images.task, images.width, images.height, params.num_inference_steps,
            params.scheduler, params.guidance_scale, params.prompt_strength,
            bool(params.negative_prompt), params.use_refiner,
            params.refiner_steps if params.use_refiner else None, params.high_noise_frac,
            work.stages, tuple((lora.key, lora.scale) for lora in work.loras))


def batch_arguments(
    pipe: Any, spec: FamilySpec, works: list[Work], *, generators: list[Any], on_step: Any
) -> dict[str, Any]:
    """Every keyword of ``pipe``'s call for ``works`` (jobs of one key), one row per image.

    A job alone is called exactly as it always was (one prompt, ``num_images_per_prompt``)."""
    first = works[0]
    arguments = call_arguments(pipe, spec, first.params, first.images, generators=generators,
                               on_step=on_step)
    if len(works) == 1:
        return arguments
    rows = [work for work in works for _ in work.seeds]
    arguments["prompt"] = [work.params.prompt for work in rows]
    arguments["num_images_per_prompt"] = 1
    if arguments.get("negative_prompt") is not None:
        arguments["negative_prompt"] = [work.params.negative_prompt for work in rows]
    if "image" in arguments:
        arguments["image"] = [work.images.init for work in rows]
    if "mask_image" in arguments:
        arguments["mask_image"] = [work.images.mask for work in rows]
    return arguments
