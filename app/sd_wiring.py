"""Wiring of the Stable Diffusion adapter: weights from MODEL_PATH, or the tiny local pipeline.

In a local run with no MODEL_PATH, a tiny pipeline with random weights is built once under
STATE_DIR (``tiny-sd``, or ``tiny-<family>`` for the family SD_PIPELINE forces, such as
``tiny-flux-schnell``) and loaded through the same ``from_pretrained`` path as real weights, so
a fresh CPU machine with no network runs the real diffusers code. In production a missing
MODEL_PATH is a configuration error: podworker never falls back to random weights there.

The family (SD_PIPELINE, else the weights' ``model_index.json``) is found here when the weights
can be read, and SD_MAX_* checked against its defaults (``ConfigurationError``); when they
cannot be read yet, the model finds it at load and reports what is missing. Input images
(``init_image``, ``mask``) are loaded under INPUT_IMAGE_MAX_*; URLs are fetched only with
INPUT_URL_FETCH, through the SSRF-safe fetcher. SD_REFINER_PATH (SDXL's refiner) is refused
at start with any other family; its folder is checked when the model loads.

A MODEL_PATH that is a hub id (not a folder) is looked for offline in MODEL_CACHE_DIRS (RunPod's
model cache by default), then in Hugging Face's own cache (HF_HOME), and the snapshot folder
found is loaded as a folder (:func:`weights_path`). LoRAs: LORA_DIR, and URLs with
LORA_URL_FETCH through the same SSRF-safe fetcher, kept under STATE_DIR/lora-cache
(:func:`lora_library`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from app.settings import Settings
from domain.errors import ConfigurationError
from domain.ports import Model

if TYPE_CHECKING:
    from adapters.stable_diffusion.families import FamilySpec
    from adapters.stable_diffusion.input_images import ImageLoader
    from adapters.stable_diffusion.limits import SdLimits
    from adapters.stable_diffusion.lora_sources import LoraLibrary
    from adapters.stable_diffusion.weights_cache import FoundWeights

log = logging.getLogger("podworker.model")


def sd_limits(settings: Settings) -> SdLimits:
    """The input limits from the SD_MAX_* settings."""
    from adapters.stable_diffusion.limits import SdLimits

    try:
        return SdLimits(
            max_prompt_chars=settings.SD_MAX_PROMPT_CHARS,
            max_pixels=settings.SD_MAX_PIXELS,
            max_outputs=settings.SD_MAX_OUTPUTS,
            max_steps=settings.SD_MAX_STEPS,
        )
    except ValueError as exc:
        raise ConfigurationError(f"invalid SD_MAX_* setting: {exc}") from None


def build_stable_diffusion(settings: Settings) -> Model:
    from adapters.stable_diffusion.model import StableDiffusionModel

    path = settings.MODEL_PATH
    if path is None:
        if not settings.local_mode:
            tiny = settings.STATE_DIR / "tiny-sd"
            raise ConfigurationError(
                "invalid setting MODEL_PATH: required for MODEL=stable_diffusion (a folder of "
                "diffusers weights, such as the ones baked into the image); to try the worker "
                "without weights, use the local run's tiny random pipeline: "
                f"`.venv/bin/podworker make-tiny-model {tiny}` and MODEL_PATH={tiny}"
            )
        from adapters.stable_diffusion.tiny import make_tiny_model

        forced = settings.SD_PIPELINE.value
        family = "sd" if forced == "auto" else forced
        folder = make_tiny_model(settings.STATE_DIR / f"tiny-{family}", family=family)
        log.warning(
            "MODEL_PATH is not set: using a tiny %s pipeline with random weights (%s); images "
            "will be noise", family, folder, extra={"event": "tiny_model"},
        )
        path = str(folder)
    path = weights_path(path, settings)
    from adapters.stable_diffusion.acceleration import CompileOptions

    limits = sd_limits(settings)
    spec = family_of(path, settings, limits)
    check_refiner(settings, spec)
    for width, height in settings.sd_sizes:
        if width * height > limits.max_pixels:
            raise ConfigurationError(
                f"invalid setting SD_SIZES: {width}x{height} is more than SD_MAX_PIXELS "
                f"({limits.max_pixels} pixels)"
            )
        if spec is not None and (width % spec.side_multiple or height % spec.side_multiple):
            raise ConfigurationError(
                f"invalid setting SD_SIZES: {width}x{height}: {spec.label} sides are multiples "
                f"of {spec.side_multiple}"
            )
    # kept across restarts with the outbox, unless a shared folder is named
    cache = Path(settings.SD_COMPILE_CACHE_DIR or settings.STATE_DIR / "compile-cache")
    compile_options = (
        CompileOptions(mode=settings.SD_COMPILE_MODE, cache_dir=cache,
                       state_dir=settings.STATE_DIR, tuned=settings.SD_COMPILE_TUNED)
        if settings.MODEL_COMPILE else False
    )
    model: Model = StableDiffusionModel(
        path,
        device=settings.MODEL_DEVICE,
        allow_download=settings.MODEL_ALLOW_DOWNLOAD,
        compile=compile_options,
        limits=limits,
        sizes=settings.sd_sizes,
        png_compression=settings.SD_PNG_COMPRESSION,
        family=spec or settings.SD_PIPELINE.value,
        images=image_loader(settings),
        batch_max=settings.SD_BATCH_MAX,
        batch_wait_s=settings.SD_BATCH_WAIT_MS / 1000,
        refiner_path=settings.SD_REFINER_PATH,
        fuse_qkv=settings.MODEL_COMPILE and settings.SD_COMPILE_TUNED,
        first_block_cache=settings.SD_FIRST_BLOCK_CACHE,
        loras=lora_library(settings),
    )
    return model


def hub_caches(settings: Settings) -> tuple[Path, ...]:
    """Where a hub id is looked for, in order: MODEL_CACHE_DIRS, then Hugging Face's own cache
    (HF_HUB_CACHE, or HF_HOME/hub, as huggingface_hub reads them)."""

    try:
        from huggingface_hub import constants
    except ImportError:
        return settings.model_cache_dirs
    own = Path(constants.HF_HUB_CACHE)
    return (*settings.model_cache_dirs, *(() if own in settings.model_cache_dirs else (own,)))


def found_weights(path: str, settings: Settings) -> FoundWeights | None:
    """Where the hub id ``path`` is cached (None for a folder, or a hub id in no cache)."""

    from adapters.stable_diffusion.loading import is_hub_id
    from adapters.stable_diffusion.weights_cache import find_in_caches

    if Path(path).expanduser().exists() or not is_hub_id(path.strip()):
        return None
    return find_in_caches(path.strip(), hub_caches(settings))


def weights_path(path: str, settings: Settings) -> str:
    """MODEL_PATH as the model loads it: a hub id found in a cache becomes its snapshot folder;
    anything else is left for the model's load to read (or refuse, or download)."""
    found = found_weights(path, settings)
    if found is None:
        return path
    log.info("weights of %s found in %s (snapshot %s%s)", found.hub_id, found.cache,
             found.revision[:12], f", newest of {found.snapshots}" if found.snapshots > 1 else "",
             extra={"event": "weights_found", "cache": str(found.cache)})
    return str(found.snapshot)


def lora_library(settings: Settings) -> LoraLibrary | None:
    """The LoRA files jobs may name: LORA_DIR, and URLs with LORA_URL_FETCH (None: neither).
    ``ConfigurationError`` when LORA_CACHE_MAX is below LORA_MAX_PER_JOB."""
    if settings.LORA_DIR is None and not settings.LORA_URL_FETCH:
        return None
    from adapters.http.safe_fetch import FetchPolicy, SafeFetcher
    from adapters.stable_diffusion.lora_sources import LoraLibrary, LoraLimits

    try:
        limits = LoraLimits(max_bytes=settings.LORA_MAX_BYTES, max_rank=settings.LORA_MAX_RANK,
                            max_per_job=settings.LORA_MAX_PER_JOB,
                            cache_max=settings.LORA_CACHE_MAX)
    except ValueError as exc:
        raise ConfigurationError(f"invalid setting LORA_CACHE_MAX: {exc}") from None
    fetcher = None
    if settings.LORA_URL_FETCH:
        fetcher = SafeFetcher(FetchPolicy(
            deadline_s=settings.LORA_URL_TIMEOUT / 1000,
            max_bytes=settings.LORA_MAX_BYTES,
            allow_private=settings.INPUT_URL_ALLOW_PRIVATE,
        ))
    return LoraLibrary(settings.LORA_DIR, settings.STATE_DIR / "lora-cache", limits, fetcher)


def family_of(path: str, settings: Settings, limits: SdLimits) -> FamilySpec | None:
    """The family of the weights at ``path`` (or SD_PIPELINE's), None when the weights cannot
    be read yet. Raises ``ConfigurationError`` when SD_MAX_* refuse the family's defaults."""
    from adapters.stable_diffusion.families import check_limits, detect_family
    from domain.errors import ModelError

    try:
        spec = detect_family(path, settings.SD_PIPELINE.value)
    except ModelError:
        return None  # the model's load() says what is wrong with the weights
    try:
        check_limits(spec, limits)
    except ValueError as exc:
        raise ConfigurationError(f"invalid SD_MAX_* setting: {exc}") from None
    return spec


def check_refiner(settings: Settings, spec: FamilySpec | None) -> None:
    """``ConfigurationError`` when SD_REFINER_PATH is set for a base that is not SDXL (a base
    whose family cannot be read yet is checked by the model at load)."""
    if settings.SD_REFINER_PATH is None or spec is None or spec.family == "sdxl":
        return
    raise ConfigurationError(
        f"invalid setting SD_REFINER_PATH: the refiner (stable-diffusion-xl-refiner) finishes "
        f"SDXL images only, and the base model is {spec.label}; unset SD_REFINER_PATH or use "
        "an SDXL base"
    )


def image_loader(settings: Settings) -> ImageLoader:
    """The loader of input images, with the SSRF-safe fetcher when INPUT_URL_FETCH is on."""
    from adapters.http.safe_fetch import FetchPolicy, SafeFetcher
    from adapters.stable_diffusion.input_images import ImageInputLimits, ImageLoader

    fetcher = None
    if settings.INPUT_URL_FETCH:
        fetcher = SafeFetcher(FetchPolicy(
            deadline_s=settings.INPUT_URL_TIMEOUT / 1000,
            max_bytes=settings.INPUT_IMAGE_MAX_BYTES,
            allow_private=settings.INPUT_URL_ALLOW_PRIVATE,
        ))
    limits = ImageInputLimits(max_bytes=settings.INPUT_IMAGE_MAX_BYTES,
                              max_pixels=settings.INPUT_IMAGE_MAX_PIXELS)
    return ImageLoader(limits, fetcher)
