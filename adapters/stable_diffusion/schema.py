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
from collections.abc import Callable, Mapping, Sequence
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

from adapters.stable_diffusion.schedulers import SCHEDULER_NAMES, canonical_scheduler
from domain.errors import InvalidInput

SEED_MAX = 2**32 - 1
"""Largest seed accepted. Image i of a job uses ``(seed + i) % 2**32``, which is also valid."""

MIN_SIDE = 64
DEFAULT_SIDE = 512
DEFAULT_STEPS = 25
SIDE_MULTIPLE = 8  # the VAE works on 8x8 pixel cells
MAX_GUIDANCE = 20.0
MAX_REPORTED_PROBLEMS = 12  # a message stays readable even for an input full of junk keys

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
        text = _text(value, _limits(info))
        if not text.strip():
            raise _problem("must not be empty")
        return text

    @field_validator("negative_prompt", mode="plain")
    @classmethod
    def _negative_prompt(cls, value: Any, info: ValidationInfo) -> str | None:
        return None if value is None else _text(value, _limits(info))

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
        return 1 if value is None else _bounded(_integer(value), 1, _limits(info).max_outputs)

    @field_validator("num_inference_steps", mode="plain")
    @classmethod
    def _steps(cls, value: Any, info: ValidationInfo) -> int:
        steps = DEFAULT_STEPS if value is None else _integer(value)
        return _bounded(steps, 1, _limits(info).max_steps)

    @field_validator("guidance_scale", mode="plain")
    @classmethod
    def _guidance(cls, value: Any) -> float:
        if value is None:
            return 7.5
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _problem(f"must be a number (got {_show(value)})")
        if not math.isfinite(value) or not 0 <= value <= MAX_GUIDANCE:
            raise _problem(f"must be between 0 and {MAX_GUIDANCE:g} (got {_show(value)})")
        return float(value)

    @field_validator("scheduler", mode="plain")
    @classmethod
    def _scheduler(cls, value: Any) -> str:
        if value is None:
            return "DDIM"
        if not isinstance(value, str):
            raise _problem(f"must be a string (got {_show(value)})")
        canonical = canonical_scheduler(value)
        if canonical is None:
            raise _problem(f"unknown {_show(value)}, allowed: {', '.join(SCHEDULER_NAMES)}")
        return canonical

    @field_validator("seed", mode="plain")
    @classmethod
    def _seed(cls, value: Any) -> int | None:
        return None if value is None else _bounded(_integer(value), 0, SEED_MAX)


FIELD_NAMES: tuple[str, ...] = (*SdInput.model_fields, "num_images")
"""Every key an input may have (``num_images`` being ``num_outputs``'s alias)."""


def parse_input(raw: Mapping[str, Any], limits: SdLimits | None = None) -> SdInput:
    """Validate one job's input against ``limits``.

    Raises ``InvalidInput`` whose message names every bad field at once, in one line.
    """
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"invalid input: must be a JSON object (got {_show(raw)})")
    try:
        return SdInput.model_validate(dict(raw), context={"limits": limits or DEFAULT_LIMITS})
    except ValidationError as exc:
        raise InvalidInput(describe_problems(exc)) from None


def describe_problems(
    exc: ValidationError,
    field_names: Sequence[str] = FIELD_NAMES,
    extra_field: Callable[[str], tuple[str, bool]] | None = None,
) -> str:
    """``invalid input: <field>: <problem>; <field>: <problem>; ...`` for every problem.

    ``field_names`` and ``extra_field`` (the message for a key the schema does not take, and
    whether it is simply unknown) let another schema (a pipeline family's) share these rules.
    """
    explain = extra_field or _extra_field
    problems: list[str] = []
    unknown = False
    for err in exc.errors(include_url=False):
        field = ".".join(_show_key(part) for part in err["loc"]) or "input"
        kind = err["type"]
        if kind == "sd_pixels":
            problems.append(str(err["msg"]))
        elif kind == "missing":
            problems.append(f"{field}: is required")
        elif kind == "extra_forbidden":
            message, is_unknown = explain(str(err["loc"][0]) if err["loc"] else field)
            unknown = unknown or is_unknown
            problems.append(f"{field}: {message}")
        else:
            problems.append(f"{field}: {err['msg']}")
    if len(problems) > MAX_REPORTED_PROBLEMS:
        hidden = len(problems) - MAX_REPORTED_PROBLEMS
        problems = [*problems[:MAX_REPORTED_PROBLEMS], f"and {hidden} more"]
    if unknown:
        problems.append(f"known fields: {', '.join(field_names)}")
    return "invalid input: " + "; ".join(problems)


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


def _problem(message: str) -> PydanticCustomError:
    # The message goes in the context: user text with braces must not be read as a template.
    return PydanticCustomError("sd_input", "{message}", {"message": message})


def _text(value: Any, limits: SdLimits) -> str:
    if not isinstance(value, str):
        raise _problem(f"must be a string (got {_show(value)})")
    if len(value) > limits.max_prompt_chars:
        raise _problem(f"must be at most {limits.max_prompt_chars} characters (got {len(value)})")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _problem(f"must be an integer (got {_show(value)})")
    if isinstance(value, float):
        if not value.is_integer():
            raise _problem(f"must be an integer (got {_show(value)})")
        return int(value)
    return value


def _bounded(value: int, low: int, high: int) -> int:
    if value < low:
        raise _problem(f"must be at least {low} (got {_show(value)})")
    if value > high:
        raise _problem(f"must be at most {high} (got {_show(value)})")
    return value


def _side(value: Any, limits: SdLimits) -> int:
    # The longest side the pixel cap allows, the other side being the smallest one.
    side = _bounded(_integer(value), MIN_SIDE, limits.max_pixels // MIN_SIDE)
    if side % SIDE_MULTIPLE:
        raise _problem(f"must be a multiple of {SIDE_MULTIPLE} (got {side})")
    return side


def _show(value: Any) -> str:
    """A short JSON-flavoured picture of a value, for messages (never a whole prompt)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    text = repr(value)
    if len(text) <= 40:
        return text
    return text[:36] + ("...'" if isinstance(value, str) else "...")


def _show_key(key: object) -> str:
    text = str(key)
    if text.isprintable() and len(text) <= 40:
        return text
    return repr(text)[:40]
