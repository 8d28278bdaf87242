"""A family's pipelines: loaded from the weights once, with img2img and inpainting sharing them.

- **One load, three tasks.** The family's text-to-image class (``getattr(diffusers,
  spec.text2img)``) loads the weights; its image-to-image and inpainting classes are made from
  it with diffusers' ``from_pipe``, which hands over the same modules: no second copy of any
  weight, and the speed-ups and compiled forwards applied to the modules serve every task.
- **The family's dtype on CUDA.** fp16 for SD 1.x/2.x and SDXL (SDXL pipelines upcast their VAE
  to float32 for decoding on their own when its config says ``force_upcast``, as SDXL's does;
  the fp16-fix VAE says it need not); bf16 for SD3 and Flux, which were trained in it and
  overflow in fp16. float32 on the CPU.
- **Their parts checked.** SD and SDXL denoise with a ``unet``, SD3 and Flux with a
  ``transformer``; a folder whose pipeline lacks its denoiser, VAE, text encoder or scheduler is
  refused at load with ``ModelError``.

Nothing here is imported from torch or diffusers at import time.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

from adapters.stable_diffusion.acceleration import Compilation, CompileOptions
from adapters.stable_diffusion.families import (
    Family,
    FamilySpec,
    cached_index,
    check_limits,
    detect_family,
)
from adapters.stable_diffusion.faults import describe, forget
from adapters.stable_diffusion.job_images import JobImages, pipeline_arguments, task_of
from adapters.stable_diffusion.limits import SdLimits
from adapters.stable_diffusion.loading import (
    download_failure,
    dtype_argument,
    load_failure,
    quiet_hub_logs,
)
from adapters.stable_diffusion.schedulers import SCHEDULER_NAMES
from adapters.stable_diffusion.schema import FamilyInput
from adapters.stable_diffusion.warmup_plan import unet_graphs
from domain.errors import ModelError

log = logging.getLogger("podworker.model")

TRANSFORMER_FAMILIES = frozenset({Family.SD3, Family.FLUX})
DIRECT_DEVICE = "cuda"
"""The device weights are loaded straight onto (diffusers' ``device_map`` takes "cuda", not
"cuda:N")."""
WARMUP_STEPS = 2


def denoiser_name(spec: FamilySpec) -> str:
    """``"transformer"`` for SD3 and Flux, ``"unet"`` for SD and SDXL."""
    return "transformer" if spec.family in TRANSFORMER_FAMILIES else "unet"


def family_dtype(torch: Any, spec: FamilySpec, *, on_cuda: bool) -> Any:
    """The weights' dtype for ``spec``'s family on this device (see the module docstring)."""
    if not on_cuda:
        return torch.float32
    return torch.bfloat16 if spec.family in TRANSFORMER_FAMILIES else torch.float16


def checked_family(
    spec: FamilySpec | None, source: str, limits: SdLimits, *, allow_download: bool = False
) -> FamilySpec:
    """``spec``, or the family of the weights at ``source`` (a hub id's ``model_index.json``,
    and its ``transformer/config.json`` when there is one, are downloaded when
    ``allow_download``); ``ModelError`` when it cannot be told or when ``limits`` would refuse
    a job that takes the family's defaults."""
    if spec is None:
        folder = source if Path(source).is_dir() else hub_index_folder(source, allow_download)
        spec = detect_family(folder)
    try:
        check_limits(spec, limits)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    return spec


def hub_index_folder(source: str, allow_download: bool) -> str:
    """The folder that holds hub id ``source``'s ``model_index.json``: its copy in the local
    cache, or, with ``allow_download``, one downloaded, with ``transformer/config.json`` beside
    it when the hub has one (what tells Flux schnell from dev; best effort: without it, Flux is
    dev). Raises ``ModelError`` saying what to do when neither can be had.

    Before downloading, one request that is not retried asks the hub for the file: without a
    network it fails at once, where ``hf_hub_download`` would retry for half a minute."""
    where = f"could not load a Stable Diffusion pipeline from {source!r}"
    if not allow_download:
        cached = cached_index(source)
        if cached is None:
            raise ModelError(
                f"{where}: not a local folder, not in the local Hugging Face cache, and "
                "downloads are off: allow them with MODEL_ALLOW_DOWNLOAD=true, or set "
                "MODEL_PATH to a folder of diffusers weights")
        return str(cached.parent)
    quiet_hub_logs()
    import huggingface_hub

    try:
        huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(source, "model_index.json"))
        folder = str(Path(huggingface_hub.hf_hub_download(source, "model_index.json")).parent)
    except Exception as exc:
        message = download_failure(source, exc, revision=None, variant=None, offline=False)
        forget(exc)
        raise ModelError(f"{where} (not a local folder, not in the local Hugging Face cache): "
                         f"{message}") from None
    try:
        huggingface_hub.hf_hub_download(source, "transformer/config.json")
    except Exception as exc:  # no transformer (SD, SDXL), or not reachable: not needed
        forget(exc)
    return folder


def compile_denoiser(
    torch: Any, spec: FamilySpec, pipe: Any, options: CompileOptions, *,
    sizes: tuple[tuple[int, int], ...], max_outputs: int, device: str = "cpu", model: str = "",
) -> Compilation:
    """The denoiser compiled (see :mod:`.acceleration`): a UNet whole, a transformer (SD3,
    Flux) by its repeated blocks. ``device`` and ``model`` key the compile cache."""
    return Compilation(torch, pipe, options, graphs=unet_graphs(sizes, max_outputs),
                       denoiser=denoiser_name(spec), device=device, model=model,
                       max_rows=max_outputs)


def first_block_cache(diffusers: Any, spec: FamilySpec, pipe: Any, threshold: float) -> bool:
    """Turn on diffusers' first-block cache (lossy: a step whose first block changed less than
    ``threshold`` reuses the rest of the last step's residual) on a transformer that offers it;
    False, with a warning, for a denoiser that does not (UNets, SD3 in this diffusers)."""
    denoiser = getattr(pipe, denoiser_name(spec))
    config_class = getattr(diffusers, "FirstBlockCacheConfig", None)
    if config_class is None or not hasattr(denoiser, "enable_cache"):
        log.warning("SD_FIRST_BLOCK_CACHE ignored: %s's %s has no first-block cache in this "
                    "diffusers", spec.label, type(denoiser).__name__,
                    extra={"event": "first_block_cache_unavailable"})
        return False
    denoiser.enable_cache(config_class(threshold=threshold))
    log.info("first-block cache on (threshold %s): faster, images differ slightly", threshold,
             extra={"event": "first_block_cache"})
    return True


def load_pipeline(
    diffusers: Any, spec: FamilySpec, source: str, *, dtype: Any, allow_download: bool,
    device: str | None = None,
) -> Any:
    """The family's text-to-image pipeline from ``source``. Raises ``ModelError``.

    On ``device="cuda"`` the weights are read from their safetensors files straight onto the
    GPU (diffusers' ``device_map="cuda"``: modules made empty, then filled on the device), with
    no full copy in host memory first; any other device loads on the host (the caller moves the
    pipeline). ``bench/load_time.py`` times both."""
    pipeline_class = getattr(diffusers, spec.text2img)
    extra: dict[str, Any] = {}
    if spec.family is Family.SD:  # the only family with a safety checker: not loaded
        extra = {"safety_checker": None, "requires_safety_checker": False}
    if device == DIRECT_DEVICE:
        extra["device_map"] = device
    try:
        pipe = pipeline_class.from_pretrained(
            source, **dtype_argument(dtype), local_files_only=not allow_download, **extra
        )
    except Exception as exc:
        message = load_failure(source, exc, allow_download=allow_download)
        forget(exc)
        raise ModelError(message) from None
    parts = (denoiser_name(spec), "vae", "text_encoder", "scheduler")
    missing = [part for part in parts if getattr(pipe, part, None) is None]
    if missing:
        raise ModelError(
            f"{source!r} is not a {spec.label} pipeline (no {', '.join(missing)})"
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_variants(
    diffusers: Any, spec: FamilySpec, pipe: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    """``{task: pipeline}`` for every task the family has, sharing ``pipe``'s modules, and the
    tasks that could not be made here with the reason (a diffusers release without the class)."""
    variants: dict[str, Any] = {"text2img": pipe}
    unavailable: dict[str, str] = {}
    for task, class_name in (("img2img", spec.img2img), ("inpaint", spec.inpaint)):
        if class_name is None:
            continue
        try:
            variant = getattr(diffusers, class_name).from_pipe(pipe)
        except Exception as exc:
            unavailable[task] = f"{class_name} could not be made: {describe(exc)}"
            forget(exc)
            log.warning("no %s for this %s pipeline: %s", task, spec.label, unavailable[task],
                        extra={"event": "variant_unavailable"})
            continue
        variant.set_progress_bar_config(disable=True)
        variants[task] = variant
    return variants, unavailable


def denoising_steps(params: FamilyInput, images: JobImages) -> int:
    """How many steps the pipeline runs: all of them for text-to-image; with an init image,
    ``int(num_inference_steps * prompt_strength)`` (diffusers skips the rest)."""
    if images.task == "text2img" or params.prompt_strength is None:
        return params.num_inference_steps
    return max(1, int(params.num_inference_steps * params.prompt_strength))


def call_arguments(
    pipe: Any, spec: FamilySpec, params: FamilyInput, images: JobImages, *,
    generators: list[Any], on_step: Any,
) -> dict[str, Any]:
    """Every keyword of ``pipe``'s call for one job (``output_type="pt"``: float images in
    [0, 1], turned to 8-bit on the device by the caller). ``negative_prompt`` only for families
    that take one; ``width``/``height`` for every pipeline whose call takes them (SD3's and
    Flux's img2img would otherwise resize the init image to their default size); the spec's
    ``max_sequence_length`` (T5 prompt tokens) when it has one and the call takes it."""
    arguments: dict[str, Any] = {
        "prompt": params.prompt,
        "num_inference_steps": params.num_inference_steps,
        "guidance_scale": params.guidance_scale,
        "num_images_per_prompt": len(generators),
        "generator": generators,
        "output_type": "pt",
        "callback_on_step_end": on_step,
        "callback_on_step_end_tensor_inputs": [],
        **pipeline_arguments(params, images),
    }
    if spec.negative_prompt:
        arguments["negative_prompt"] = params.negative_prompt or None
    accepted = inspect.signature(pipe.__call__).parameters
    if "width" in accepted:
        arguments |= {"width": images.width, "height": images.height}
    if spec.max_sequence_length is not None and "max_sequence_length" in accepted:
        arguments["max_sequence_length"] = spec.max_sequence_length
    return arguments


def warmup_input(
    spec: FamilySpec, width: int, height: int, outputs: int, guided: bool
) -> FamilyInput:
    """A short text-to-image job for the warm-up (DDIM where the family lets jobs choose)."""
    return FamilyInput.model_construct(
        prompt="warm-up", width=width, height=height, num_outputs=outputs,
        num_inference_steps=WARMUP_STEPS, guidance_scale=spec.default_guidance if guided else 1.0,
        scheduler="DDIM" if spec.default_scheduler else None, negative_prompt=None, seed=0,
        init_image=None, mask=None, prompt_strength=None,
    )


def refusal(
    params: FamilyInput, images: JobImages | None, *, unavailable: dict[str, str],
    sizes: tuple[tuple[int, int], ...],
) -> str | None:
    """Why this worker cannot serve a valid job, or None: a scheduler or a task it lacks, or a
    size outside ``sizes`` (``SD_SIZES``; checked once ``images`` gives the output size)."""
    reason = unavailable.get(params.scheduler or "")
    if reason is not None:
        available = ", ".join(n for n in SCHEDULER_NAMES if n not in unavailable)
        return (f"scheduler: {params.scheduler} is not available on this worker ({reason}); "
                f"available: {available}")
    task = task_of(params)
    if task in unavailable:
        field = "mask" if task == "inpaint" else "init_image"
        return f"{field}: {task} is not available on this worker ({unavailable[task]})"
    if images is not None and sizes and (images.width, images.height) not in sizes:
        served = ", ".join(f"{w}x{h}" for w, h in sizes)
        return (f"width x height: {images.width}x{images.height} is not served by this "
                f"worker; sizes served: {served}")
    return None
