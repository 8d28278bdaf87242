"""How much one Stable Diffusion job may ask for, and the bounds every family shares.

The limits are the settings ``SD_MAX_PROMPT_CHARS``, ``SD_MAX_PIXELS``, ``SD_MAX_OUTPUTS`` and
``SD_MAX_STEPS``, handed in as one :class:`SdLimits`. Whether they let a family's default job
through (SDXL's 1024x1024, Flux dev's 28 steps) is checked in one place,
:func:`.families.check_limits`, when the model is built. Pure: no environment, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

SEED_MAX = 2**32 - 1
"""Largest seed accepted. Image i of a job uses ``(seed + i) % 2**32``, which is also valid."""

MIN_SIDE = 64
"""Smallest width or height (the tiny pipelines' size; below it the VAE's latents vanish)."""

MAX_GUIDANCE = 20.0
"""Largest ``guidance_scale`` (the templates' bound; beyond it images burn out)."""

UNSUPPORTED_FIELDS = frozenset({"controlnet", "ip_adapter_image"})
"""Fields RunPod's templates know that this worker does not implement: refused by name."""


@dataclass(frozen=True)
class SdLimits:
    """How much one job may ask for. Each bounds GPU time or memory for a single job.

    - ``max_prompt_chars``: characters in ``prompt`` and in ``negative_prompt`` (CLIP reads 77
      tokens anyway; the bound keeps inputs and logs small).
    - ``max_pixels``: ``width * height`` of one image; memory grows with it (1024*1024 fits an
      SD 1.5 batch of 4 in fp16 on a 24 GB card).
    - ``max_outputs``: images per job (memory and time grow linearly).
    - ``max_steps``: denoising steps per job (time grows linearly).

    The defaults are the settings' defaults (a unit test keeps the two equal).
    """

    max_prompt_chars: int = 2000
    max_pixels: int = 1024 * 1024
    max_outputs: int = 4
    max_steps: int = 500

    def __post_init__(self) -> None:
        for name in ("max_prompt_chars", "max_pixels", "max_outputs", "max_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SdLimits.{name} must be a positive integer (got {value!r})")


DEFAULT_LIMITS = SdLimits()
