"""The Stable Diffusion model's input: what a job may ask for, checked before any GPU work.

Names and defaults follow RunPod's Stable Diffusion worker templates, so inputs users already
send keep working:

==========================  ========  ===============================================
field                       default   accepted
==========================  ========  ===============================================
``prompt``                  required  a non-blank string, at most ``max_prompt_chars``
``negative_prompt``         none      a string, at most ``max_prompt_chars``
``width``, ``height``       512       multiples of 8, at least 64, and
                                      ``width * height <= max_pixels``
``num_outputs``             1         1 to ``max_outputs``; ``num_images`` is an alias
``num_inference_steps``     25        1 to ``max_steps``
``guidance_scale``          7.5       a number from 0 to 20 (1 or less turns off
                                      classifier-free guidance, halving the work)
``scheduler``               DDIM      a name in :data:`SCHEDULER_NAMES` or an alias
``seed``                    random    an integer from 0 to 2**32 - 1
==========================  ========  ===============================================

Why 25 steps by default (the SD 1.x templates say 50): 25 DDIM steps give nearly the same
image for half the GPU time, and the step count is the one thing a caller can always raise.

Decisions a caller can rely on:

- **Every problem is reported at once**, as one line: ``invalid input: width: must be a
  multiple of 8 (got 100); num_outputs: must be at most 4 (got 9); ...``. Never a pydantic URL,
  never a traceback, never the prompt's text.
- **Types are strict.** Numbers must be JSON numbers: ``"512"`` and ``true`` are refused
  (``width: must be an integer (got '512')``); a whole float such as ``512.0`` is accepted.
  ``null`` means "use the default" for every field except ``prompt``.
- **Unknown fields are refused**, with a suggestion for near misses and the list of known
  fields: a typo such as ``num_inference_step`` silently ignored would produce a different
  image with no hint why. Template fields this worker does not implement (``init_image``,
  ``mask``, ``prompt_strength``, ``lora``, ...) get their own message: not supported here.
- Limits come from :class:`SdLimits`, built from settings and handed in; this module reads no
  environment and imports neither torch nor diffusers.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from adapters.stable_diffusion.field_checks import (
    checked_integer,
    checked_text,
    describe_problems,
    field_problem,
    show_value,
    within_bounds,
)
from adapters.stable_diffusion.schedulers import SCHEDULER_NAMES, canonical_scheduler
from domain.errors import InvalidInput

SEED_MAX = 2**32 - 1
"""Largest seed accepted. Image i of a job uses ``(seed + i) % 2**32``, which is also valid."""

MIN_SIDE = 64
DEFAULT_SIDE = 512
DEFAULT_STEPS = 25
SIDE_MULTIPLE = 8  # the VAE works on 8x8 pixel cells
MAX_GUIDANCE = 20.0

UNSUPPORTED_FIELDS = frozenset(
    {
        "init_image",
        "image",
        "mask",
        "mask_image",
        "prompt_strength",
        "strength",
        "lora",
        "lora_scale",
        "refiner_inference_steps",
        "high_noise_frac",
        "use_refiner",
        "controlnet",
        "ip_adapter_image",
    }
)
"""Fields RunPod's templates know (img2img, inpainting, LoRA, refiner) that this worker does not."""


@dataclass(frozen=True)
class SdLimits:
    """How much one job may ask for. Each bounds GPU time or memory for a single job.

    - ``max_prompt_chars``: characters in ``prompt`` and in ``negative_prompt`` (CLIP reads 77
      tokens anyway; the bound keeps inputs and logs small).
    - ``max_pixels``: ``width * height`` of one image; memory grows with it (1024*1024 fits an
      SD 1.5 batch of 4 in fp16 on a 24 GB card).
    - ``max_outputs``: images per job (memory and time grow linearly).
    - ``max_steps``: denoising steps per job (time grows linearly).
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
        # A limit below a default would refuse every job that leaves the field out.
        if self.max_pixels < DEFAULT_SIDE * DEFAULT_SIDE:
            raise ValueError(
                f"SdLimits.max_pixels must be at least {DEFAULT_SIDE * DEFAULT_SIDE} "
                f"({DEFAULT_SIDE}x{DEFAULT_SIDE}, the default size; got {self.max_pixels})"
            )
        if self.max_steps < DEFAULT_STEPS:
            raise ValueError(
                f"SdLimits.max_steps must be at least {DEFAULT_STEPS} (the default step count; "
                f"got {self.max_steps})"
            )


DEFAULT_LIMITS = SdLimits()


class SdInput(BaseModel):
    """One job's validated input. Build it with :func:`parse_input`, which reports errors well.

    After validation ``scheduler`` holds the canonical name (``"k_euler"`` becomes ``"EULER"``)
    and ``seed`` is None when the job left it to chance.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    negative_prompt: str | None = None
    # Validating the defaults too lets ``height`` check the pixel cap whichever side was given.
    width: int = Field(DEFAULT_SIDE, validate_default=True)
    height: int = Field(DEFAULT_SIDE, validate_default=True)
    num_outputs: int = Field(1, validation_alias=AliasChoices("num_outputs", "num_images"))
    num_inference_steps: int = DEFAULT_STEPS
    guidance_scale: float = 7.5
    scheduler: str = "DDIM"
    seed: int | None = None

    @field_validator("prompt", mode="plain")
    @classmethod
    def _prompt(cls, value: Any, info: ValidationInfo) -> str:
        text = checked_text(value, _limits(info).max_prompt_chars)
        if not text.strip():
            raise field_problem("must not be empty")
        return text

    @field_validator("negative_prompt", mode="plain")
    @classmethod
    def _negative_prompt(cls, value: Any, info: ValidationInfo) -> str | None:
        return None if value is None else checked_text(value, _limits(info).max_prompt_chars)

    @field_validator("width", mode="plain")
    @classmethod
    def _width(cls, value: Any, info: ValidationInfo) -> int:
        return DEFAULT_SIDE if value is None else _side(value, _limits(info))

    @field_validator("height", mode="plain")
    @classmethod
    def _height(cls, value: Any, info: ValidationInfo) -> int:
        height = DEFAULT_SIDE if value is None else _side(value, _limits(info))
        width = info.data.get("width")
        limits = _limits(info)
        if isinstance(width, int) and width * height > limits.max_pixels:
            raise PydanticCustomError(
                "sd_pixels",
                "{message}",
                {
                    "message": f"width x height: {width}x{height} is {width * height} pixels, "
                    f"more than the limit of {limits.max_pixels}"
                },
            )
        return height

    @field_validator("num_outputs", mode="plain")
    @classmethod
    def _num_outputs(cls, value: Any, info: ValidationInfo) -> int:
        if value is None:
            return 1
        return within_bounds(checked_integer(value), 1, _limits(info).max_outputs)

    @field_validator("num_inference_steps", mode="plain")
    @classmethod
    def _steps(cls, value: Any, info: ValidationInfo) -> int:
        steps = DEFAULT_STEPS if value is None else checked_integer(value)
        return within_bounds(steps, 1, _limits(info).max_steps)

    @field_validator("guidance_scale", mode="plain")
    @classmethod
    def _guidance(cls, value: Any) -> float:
        if value is None:
            return 7.5
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise field_problem(f"must be a number (got {show_value(value)})")
        if not math.isfinite(value) or not 0 <= value <= MAX_GUIDANCE:
            raise field_problem(f"must be between 0 and {MAX_GUIDANCE:g} (got {show_value(value)})")
        return float(value)

    @field_validator("scheduler", mode="plain")
    @classmethod
    def _scheduler(cls, value: Any) -> str:
        if value is None:
            return "DDIM"
        if not isinstance(value, str):
            raise field_problem(f"must be a string (got {show_value(value)})")
        canonical = canonical_scheduler(value)
        if canonical is None:
            allowed = ", ".join(SCHEDULER_NAMES)
            raise field_problem(f"unknown {show_value(value)}, allowed: {allowed}")
        return canonical

    @field_validator("seed", mode="plain")
    @classmethod
    def _seed(cls, value: Any) -> int | None:
        return None if value is None else within_bounds(checked_integer(value), 0, SEED_MAX)


FIELD_NAMES: tuple[str, ...] = (*SdInput.model_fields, "num_images")
"""Every key an input may have (``num_images`` being ``num_outputs``'s alias)."""


def parse_input(raw: Mapping[str, Any], limits: SdLimits | None = None) -> SdInput:
    """Validate one job's input against ``limits``.

    Raises ``InvalidInput`` whose message names every bad field at once, in one line.
    """
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"invalid input: must be a JSON object (got {show_value(raw)})")
    try:
        return SdInput.model_validate(dict(raw), context={"limits": limits or DEFAULT_LIMITS})
    except ValidationError as exc:
        raise InvalidInput(describe_problems(exc, FIELD_NAMES, _extra_field)) from None


def _extra_field(key: str) -> tuple[str, bool]:
    """The message for a key the schema does not take, and whether it is simply unknown."""
    if key in ("num_outputs", "num_images"):
        return "give num_outputs or num_images, not both", False
    if key in UNSUPPORTED_FIELDS:
        return "not supported by this worker (it generates images from a text prompt only)", False
    close = difflib.get_close_matches(key, FIELD_NAMES, n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown field{hint}", True


def _limits(info: ValidationInfo) -> SdLimits:
    context = info.context
    limits = context.get("limits") if isinstance(context, dict) else None
    return limits if isinstance(limits, SdLimits) else DEFAULT_LIMITS


def _side(value: Any, limits: SdLimits) -> int:
    # The longest side the pixel cap allows, the other side being the smallest one.
    side = within_bounds(checked_integer(value), MIN_SIDE, limits.max_pixels // MIN_SIDE)
    if side % SIDE_MULTIPLE:
        raise field_problem(f"must be a multiple of {SIDE_MULTIPLE} (got {side})")
    return side
