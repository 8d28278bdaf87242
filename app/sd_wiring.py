"""Wiring of the Stable Diffusion adapter: weights from MODEL_PATH, or the tiny local pipeline.

In a local run with no MODEL_PATH, a tiny Stable Diffusion pipeline with random weights is built
once under STATE_DIR and loaded through the same ``from_pretrained`` path as real weights, so a
fresh CPU machine with no network runs the real diffusers code. In production a missing
MODEL_PATH is a configuration error: podworker never falls back to random weights there.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.settings import Settings
from domain.errors import ConfigurationError
from domain.ports import Model

if TYPE_CHECKING:
    from adapters.stable_diffusion.schema import SdLimits

log = logging.getLogger("podworker.model")


def sd_limits(settings: Settings) -> SdLimits:
    """The input limits from the SD_MAX_* settings."""
    from adapters.stable_diffusion.schema import SdLimits

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
            raise ConfigurationError(
                "invalid setting MODEL_PATH: required for MODEL=stable_diffusion (a folder of "
                "diffusers weights, such as the ones baked into the image)"
            )
        from adapters.stable_diffusion.tiny import make_tiny_model

        folder = make_tiny_model(settings.STATE_DIR / "tiny-sd")
        log.warning(
            "MODEL_PATH is not set: using a tiny Stable Diffusion pipeline with random weights "
            "(%s); images will be noise", folder, extra={"event": "tiny_model"},
        )
        path = str(folder)
    from adapters.stable_diffusion.acceleration import CompileOptions

    limits = sd_limits(settings)
    for width, height in settings.sd_sizes:
        if width * height > limits.max_pixels:
            raise ConfigurationError(
                f"invalid setting SD_SIZES: {width}x{height} is more than SD_MAX_PIXELS "
                f"({limits.max_pixels} pixels)"
            )
    cache = settings.STATE_DIR / "compile-cache"  # kept across restarts with the outbox
    compile_options = (
        CompileOptions(mode=settings.SD_COMPILE_MODE, cache_dir=cache)
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
    )
    return model
