"""SDXL's refiner (``SD_REFINER_PATH``): diffusers' "ensemble of expert denoisers".

A text-to-image job with ``use_refiner`` runs two pipeline calls on one set of generators: the
SDXL base denoises the first ``high_noise_frac`` of the noise schedule (``denoising_end``,
``output_type="latent"``), then the refiner (``StableDiffusionXLImg2ImgPipeline``) the rest of
its own ``refiner_inference_steps`` (``denoising_start``) and decodes.

- **One copy of the shared modules.** The refiner is loaded with the base's ``vae`` and
  ``text_encoder_2`` handed to ``from_pretrained``: its own copies are never read. Same dtype
  and device as the base, the same CUDA speed-ups, a scheduler per name made from its config.
- **Honest progress.** :func:`stage_steps` counts the steps each call really runs, by the same
  filtering of the schedulers' timesteps as diffusers (a second-order scheduler's two
  evaluations are one step): progress goes ``1..base + refiner``. A job whose base or refiner
  would run no step at all is refused (``InvalidInput``), naming the field to raise.

Nothing here is imported from torch or diffusers at import time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.stable_diffusion.acceleration import speed_up
from adapters.stable_diffusion.families import Family, FamilySpec
from adapters.stable_diffusion.faults import describe, forget, job_error
from adapters.stable_diffusion.job_images import JobImages
from adapters.stable_diffusion.loading import dtype_argument, load_failure, pipeline_source
from adapters.stable_diffusion.pipelines import denoising_steps
from adapters.stable_diffusion.schedulers import prepare_schedulers
from adapters.stable_diffusion.schema import FamilyInput
from domain.errors import InvalidInput, ModelError

REFINER_CLASS = "StableDiffusionXLImg2ImgPipeline"
SHARED_MODULES = ("vae", "text_encoder_2")  # handed over by the base: loaded once


@dataclass
class Refiner:
    """The loaded refiner pipeline and its schedulers (one per whitelisted name)."""

    pipe: Any
    schedulers: dict[str, Any]

    def serving(self, params: FamilyInput) -> Any:
        """The refiner pipeline, with the job's scheduler, for a job that refines; else None."""
        if not params.use_refiner:
            return None
        if params.scheduler is not None:
            self.pipe.scheduler = self.schedulers[params.scheduler]
        return self.pipe

    def stages(self, base_scheduler: Any, params: FamilyInput) -> tuple[int, int]:
        """The steps the base and the refiner run for ``params`` (a refining job). Raises
        ``InvalidInput`` when either would run none."""
        assert params.scheduler is not None and params.high_noise_frac is not None
        frac = params.high_noise_frac
        base = stage_steps(base_scheduler, params.num_inference_steps, frac, first=True)
        refiner = stage_steps(self.schedulers[params.scheduler], params.refiner_steps, frac,
                              first=False)
        problems = []
        if base == 0:
            problems.append(f"num_inference_steps: with high_noise_frac {frac:g} the base runs "
                            f"no step of {params.num_inference_steps}; ask for more")
        if refiner == 0:
            problems.append(f"refiner_inference_steps: with high_noise_frac {frac:g} the "
                            f"refiner runs no step of {params.refiner_steps}; ask for more")
        if problems:
            raise InvalidInput("invalid input: " + "; ".join(problems))
        return base, refiner


def load_refiner(
    torch: Any, diffusers: Any, spec: FamilySpec, path: str, base: Any, *, dtype: Any,
    device: str, allow_download: bool, tuning: tuple[bool, bool],
) -> Refiner:
    """The refiner at ``path`` on ``device``, sharing ``base``'s :data:`SHARED_MODULES`; on
    CUDA, the base's speed-ups (``tuning``: channels-last, fused QKV). Raises ``ModelError``
    naming ``path``."""
    if spec.family is not Family.SDXL:
        raise ModelError(f"SD_REFINER_PATH is set ({path!r}), but the refiner works with an "
                         f"SDXL base only, and the base is {spec.label}")
    try:
        path = pipeline_source(path.strip())
    except ModelError as exc:
        raise ModelError(f"SD_REFINER_PATH: {exc}") from None
    _check_index(path)
    shared = {name: getattr(base, name) for name in SHARED_MODULES}
    try:
        pipe = getattr(diffusers, REFINER_CLASS).from_pretrained(
            path, **shared, **dtype_argument(dtype), local_files_only=not allow_download)
    except Exception as exc:
        message = load_failure(path, exc, allow_download=allow_download)
        forget(exc)
        raise ModelError(f"SD_REFINER_PATH: {message}") from None
    missing = [part for part in ("unet", "scheduler") if getattr(pipe, part, None) is None]
    if missing:
        raise ModelError(f"SD_REFINER_PATH: {path!r} is not an SDXL refiner (no "
                         f"{', '.join(missing)})")
    pipe.set_progress_bar_config(disable=True)
    try:
        pipe = pipe.to(device)
        if device.startswith("cuda"):
            speed_up(torch, pipe, channels_last=tuning[0], fuse_qkv=tuning[1])
    except Exception as exc:
        error = job_error(torch, exc, device=device, oom_advice="moving the refiner there")
        raise type(error)(f"could not move the refiner to {device}: {describe(exc)}") from None
    schedulers, _ = prepare_schedulers(pipe.scheduler.config)  # the base's gaps are its own
    return Refiner(pipe, schedulers)


def _check_index(path: str) -> None:
    """A local folder must hold an SDXL refiner (``model_index.json``'s ``_class_name``)."""
    index = Path(path) / "model_index.json"
    if not Path(path).is_dir():
        return  # a hub id, or missing: from_pretrained says why, naming the path
    try:
        class_name = json.loads(index.read_text("utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelError(f"SD_REFINER_PATH: {path!r} has no readable model_index.json "
                         f"({type(exc).__name__})") from None
    if class_name != REFINER_CLASS:
        raise ModelError(f"SD_REFINER_PATH: {path!r} holds a {class_name!r} pipeline, not an "
                         f"SDXL refiner ({REFINER_CLASS})")


def stage_steps(scheduler: Any, steps: int, frac: float, *, first: bool) -> int:
    """The steps one stage runs: ``first``, the base's (timesteps at or above the cutoff, as
    ``denoising_end`` keeps them); else the refiner's (below it, as ``denoising_start`` does,
    with diffusers' +1 for an even count of a second-order scheduler). Uses a fresh scheduler
    made from ``scheduler``'s config: the one a pipeline holds is never touched."""
    fresh = type(scheduler).from_config(scheduler.config)
    fresh.set_timesteps(steps, device="cpu")
    total = int(fresh.config.num_train_timesteps)
    cutoff = round(total - frac * total)
    order = int(getattr(fresh, "order", 1) or 1)
    timesteps = [float(t) for t in fresh.timesteps]
    if first:
        evaluations = sum(1 for t in timesteps if t >= cutoff)
    else:
        evaluations = sum(1 for t in timesteps if t < cutoff)
        if order == 2 and evaluations % 2 == 0:
            evaluations += 1
        evaluations = min(evaluations, len(timesteps))
    return math.ceil(evaluations / order)


def refiner_arguments(
    works: list[Any], latents: Any, *, generators: list[Any], on_step: Any
) -> dict[str, Any]:
    """Every keyword of the refiner's call for ``works`` (jobs of one key, refining), finishing
    the base's ``latents``: each row's prompt and negative prompt, the same generators."""
    first = works[0].params
    arguments: dict[str, Any] = {
        "prompt": first.prompt,
        "negative_prompt": first.negative_prompt or None,
        "image": latents,
        "num_inference_steps": first.refiner_steps,
        "denoising_start": first.high_noise_frac,
        "guidance_scale": first.guidance_scale,
        "num_images_per_prompt": len(generators),
        "generator": generators,
        "output_type": "pt",
        "callback_on_step_end": on_step,
        "callback_on_step_end_tensor_inputs": [],
    }
    if len(works) > 1:
        rows = [work.params for work in works for _ in work.seeds]
        arguments["prompt"] = [params.prompt for params in rows]
        arguments["num_images_per_prompt"] = 1
        if arguments["negative_prompt"] is not None:
            arguments["negative_prompt"] = [params.negative_prompt for params in rows]
    return arguments


def job_stages(
    refiner: Refiner | None, schedulers: dict[str, Any], params: FamilyInput, images: JobImages
) -> tuple[int, ...]:
    """The steps of each pipeline call a job makes: the base's and the refiner's for a job that
    refines (see :meth:`Refiner.stages`), else one call's (:func:`.pipelines.denoising_steps`).
    ``schedulers``: the base's, by name."""
    if refiner is None or not params.use_refiner:
        return (denoising_steps(params, images),)
    return refiner.stages(schedulers[str(params.scheduler)], params)
