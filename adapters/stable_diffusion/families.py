"""Pipeline families: which diffusers pipeline a weights folder holds, and what its jobs may ask.

A family is chosen from the weights folder's ``model_index.json`` (its ``_class_name``, written by
``save_pretrained``), or forced with the setting ``SD_PIPELINE``:

======  ===============================  =========  =====  ========  ========  ===============
family  ``_class_name`` (any variant)    size       steps  guidance  negative  scheduler
======  ===============================  =========  =====  ========  ========  ===============
sd      StableDiffusionPipeline          512x512    25     7.5       yes       DDIM (choosable)
sdxl    StableDiffusionXLPipeline        1024x1024  25     7.5       yes       EULER (choosable)
sd3     StableDiffusion3Pipeline         1024x1024  28     7.0       yes       its flow-match
flux    FluxPipeline                     1024x1024  28     3.5       no        its flow-match
======  ===============================  =========  =====  ========  ========  ===============

Every family takes ``init_image`` (image-to-image), ``mask`` (inpainting, with ``init_image``)
and ``prompt_strength`` (0 to 1, default 0.8, only with ``init_image``; diffusers runs
``int(num_inference_steps * prompt_strength)`` steps, which must be at least 1); the img2img
and inpaint class of each is named in its :class:`FamilySpec`, reached from the same weights
with diffusers' ``AutoPipelineForImage2Image.from_pipe`` / ``AutoPipelineForInpainting
.from_pipe``. Flux's
sides are multiples of 16 (its latents are packed 2x2); the others' multiples of 8.

The input schema is :mod:`.schema`'s, in the same strict style and with the same helpers (one
line naming every bad field, strict types, unknown fields refused with a suggestion); a field a
family does not have (Flux's ``negative_prompt``, a ``scheduler`` for SD3 or Flux) is refused
by name. ``width``/``height`` left out with an ``init_image`` stay None: the image's own size
is used (see :func:`adapters.image_inputs.target_size`). This module reads no environment and
imports neither torch, diffusers nor Pillow.
"""

from __future__ import annotations

import difflib
import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from adapters.image_inputs import describe_reference_problem
from adapters.stable_diffusion.schedulers import SCHEDULER_NAMES, canonical_scheduler
from adapters.stable_diffusion.schema import (
    DEFAULT_LIMITS,
    MAX_GUIDANCE,
    MIN_SIDE,
    SEED_MAX,
    UNSUPPORTED_FIELDS,
    SdLimits,
    _bounded,
    _integer,
    _problem,
    _show,
    _text,
    describe_problems,
)
from domain.errors import InvalidInput, ModelError

DEFAULT_PROMPT_STRENGTH = 0.8


class Family(enum.StrEnum):
    SD = "sd"
    SDXL = "sdxl"
    SD3 = "sd3"
    FLUX = "flux"


@dataclass(frozen=True)
class FamilySpec:
    """One family's pipeline classes (diffusers names), defaults and what its inputs may hold."""

    family: Family
    label: str
    text2img: str
    img2img: str | None
    inpaint: str | None
    default_side: int
    default_steps: int
    default_guidance: float
    side_multiple: int = 8
    negative_prompt: bool = True
    default_scheduler: str | None = None  # None: the pipeline's own, and no choice of it

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(n for n in (self.text2img, self.img2img, self.inpaint) if n)

    @property
    def field_names(self) -> tuple[str, ...]:
        """Every key a job of this family may send (``num_images`` being an alias)."""
        return tuple(
            name
            for name in (*FamilyInput.model_fields, "num_images")
            if (name != "negative_prompt" or self.negative_prompt)
            and (name != "scheduler" or self.default_scheduler)
        )


SPECS: dict[Family, FamilySpec] = {
    spec.family: spec
    for spec in (
        FamilySpec(Family.SD, "Stable Diffusion 1.x/2.x", "StableDiffusionPipeline",
                   "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline",
                   default_side=512, default_steps=25, default_guidance=7.5,
                   default_scheduler="DDIM"),
        FamilySpec(Family.SDXL, "Stable Diffusion XL", "StableDiffusionXLPipeline",
                   "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline",
                   default_side=1024, default_steps=25, default_guidance=7.5,
                   default_scheduler="EULER"),
        FamilySpec(Family.SD3, "Stable Diffusion 3", "StableDiffusion3Pipeline",
                   "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline",
                   default_side=1024, default_steps=28, default_guidance=7.0),
        FamilySpec(Family.FLUX, "Flux", "FluxPipeline", "FluxImg2ImgPipeline",
                   "FluxInpaintPipeline", default_side=1024, default_steps=28,
                   default_guidance=3.5, side_multiple=16, negative_prompt=False),
    )
}

_BY_CLASS: dict[str, Family] = {name: s.family for s in SPECS.values() for name in s.class_names}


def family_spec(name: str) -> FamilySpec:
    """The spec of a family named ``sd``, ``sdxl``, ``sd3`` or ``flux`` (any case).

    Raises ``ValueError`` naming the known families.
    """
    try:
        return SPECS[Family(name.strip().lower())]
    except ValueError:
        known = ", ".join(f.value for f in Family)
        raise ValueError(f"unknown pipeline family {name!r}: choose auto, {known}") from None


def detect_family(
    source: str | Path, forced: str = "auto", *, cache_dir: str | Path | None = None
) -> FamilySpec:
    """The family of the weights at ``source``, or ``forced`` unless it is ``auto``.

    ``source`` is a pipeline folder, or a hub id whose ``model_index.json`` is in the local
    Hugging Face cache (``cache_dir``, else the default one; never downloaded). Reads that file
    only (no weights). Raises ``ModelError`` when it is missing or unreadable or names a
    pipeline class of no known family.
    """
    if forced.strip().lower() != "auto":
        try:
            return family_spec(forced)
        except ValueError as exc:
            raise ModelError(f"SD_PIPELINE: {exc}") from None
    index = Path(source) / "model_index.json"
    if not Path(source).is_dir():
        index = _cached_index(str(source), cache_dir) or index
    try:
        class_name = json.loads(index.read_text("utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelError(
            f"cannot tell the pipeline family of {str(source)!r}: {index.name} is missing or "
            f"unreadable ({type(exc).__name__}); set SD_PIPELINE to sd, sdxl, sd3 or flux"
        ) from None
    family = _BY_CLASS.get(class_name) if isinstance(class_name, str) else None
    if family is None:
        known = ", ".join(sorted(_BY_CLASS))
        raise ModelError(
            f"{str(source)!r} holds a {class_name!r} pipeline, which podworker does not run "
            f"(known: {known})"
        )
    return SPECS[family]


def _cached_index(repo_id: str, cache_dir: str | Path | None) -> Path | None:
    """``model_index.json`` of hub id ``repo_id`` in the local cache, if it is there."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=cache_dir)
    except (ImportError, ValueError):  # no hub library, or not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def check_limits(spec: FamilySpec, limits: SdLimits) -> None:
    """Raise ``ValueError`` when ``limits`` would refuse a job that takes every default."""
    if limits.max_pixels < spec.default_side**2:
        raise ValueError(
            f"{spec.label} makes {spec.default_side}x{spec.default_side} images by default: "
            f"SD_MAX_PIXELS must be at least {spec.default_side**2} (got {limits.max_pixels})"
        )
    if limits.max_steps < spec.default_steps:
        raise ValueError(
            f"{spec.label} takes {spec.default_steps} steps by default: SD_MAX_STEPS must be "
            f"at least {spec.default_steps} (got {limits.max_steps})"
        )


class FamilyInput(BaseModel):
    """One job's validated input for a family. Build it with :func:`parse_family_input`.

    ``width``/``height`` are None only with an ``init_image`` and no size given (the image's
    size is used); ``scheduler`` is None for families that use the pipeline's own;
    ``prompt_strength`` is set exactly when ``init_image`` is.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    num_outputs: int = Field(1, validation_alias=AliasChoices("num_outputs", "num_images"))
    num_inference_steps: int
    guidance_scale: float
    scheduler: str | None = None
    seed: int | None = None
    init_image: str | None = None
    mask: str | None = None
    prompt_strength: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, raw: Any, info: ValidationInfo) -> Any:
        """Fill the family's defaults in for fields left out or null."""
        if not isinstance(raw, dict):
            return raw
        spec = _context(info)[0]
        given = {k: v for k, v in raw.items() if v is not None}
        has_image = "init_image" in given
        defaults: dict[str, Any] = {
            "num_inference_steps": spec.default_steps,
            "guidance_scale": spec.default_guidance,
        }
        if not has_image or "width" in given or "height" in given:
            defaults |= {"width": spec.default_side, "height": spec.default_side}
        if spec.default_scheduler:
            defaults["scheduler"] = spec.default_scheduler
        if has_image:
            defaults["prompt_strength"] = DEFAULT_PROMPT_STRENGTH
        if "num_images" not in given:
            defaults["num_outputs"] = 1
        return {**defaults, **given}

    @field_validator("prompt", mode="plain")
    @classmethod
    def _prompt(cls, value: Any, info: ValidationInfo) -> str:
        text = _text(value, _context(info)[1])
        if not text.strip():
            raise _problem("must not be empty")
        return text

    @field_validator("negative_prompt", mode="plain")
    @classmethod
    def _negative_prompt(cls, value: Any, info: ValidationInfo) -> str | None:
        spec, limits = _context(info)[:2]
        if not spec.negative_prompt:
            raise _problem(f"not supported by {spec.label} pipelines (they take no negative "
                           "prompt)")
        return None if value is None else _text(value, limits)

    @field_validator("width", "height", mode="plain")
    @classmethod
    def _side(cls, value: Any, info: ValidationInfo) -> int:
        spec, limits = _context(info)[:2]
        side = _bounded(_integer(value), MIN_SIDE, limits.max_pixels // MIN_SIDE)
        if side % spec.side_multiple:
            raise _problem(f"must be a multiple of {spec.side_multiple} (got {side})")
        width = info.data.get("width")
        too_many = isinstance(width, int) and width * side > limits.max_pixels
        if info.field_name == "height" and too_many:
            raise PydanticCustomError("sd_pixels", "{message}", {
                "message": f"width x height: {width}x{side} is {side * int(width or 0)} "
                f"pixels, more than the limit of {limits.max_pixels}"})
        return side

    @field_validator("num_outputs", mode="plain")
    @classmethod
    def _num_outputs(cls, value: Any, info: ValidationInfo) -> int:
        return _bounded(_integer(value), 1, _context(info)[1].max_outputs)

    @field_validator("num_inference_steps", mode="plain")
    @classmethod
    def _steps(cls, value: Any, info: ValidationInfo) -> int:
        return _bounded(_integer(value), 1, _context(info)[1].max_steps)

    @field_validator("guidance_scale", mode="plain")
    @classmethod
    def _guidance(cls, value: Any) -> float:
        return _number(value, 0.0, MAX_GUIDANCE)

    @field_validator("scheduler", mode="plain")
    @classmethod
    def _scheduler(cls, value: Any, info: ValidationInfo) -> str:
        spec = _context(info)[0]
        if not spec.default_scheduler:
            raise _problem(f"not supported by {spec.label} pipelines (they use their own "
                           "flow-matching scheduler)")
        canonical = canonical_scheduler(value) if isinstance(value, str) else None
        if canonical is None:
            raise _problem(f"unknown {_show(value)}, allowed: {', '.join(SCHEDULER_NAMES)}")
        return canonical

    @field_validator("seed", mode="plain")
    @classmethod
    def _seed(cls, value: Any) -> int:
        return _bounded(_integer(value), 0, SEED_MAX)

    @field_validator("init_image", "mask", mode="plain")
    @classmethod
    def _image(cls, value: Any, info: ValidationInfo) -> str:
        spec, _, given, urls = _context(info)
        variant = spec.img2img if info.field_name == "init_image" else spec.inpaint
        if variant is None:
            raise _problem(f"not supported by {spec.label} pipelines")
        if info.field_name == "mask" and "init_image" not in given:
            raise _problem("needs init_image (the image to paint into)")
        problem = describe_reference_problem(value, fetch_urls=urls)
        if problem:
            raise _problem(problem)
        return str(value)

    @field_validator("prompt_strength", mode="plain")
    @classmethod
    def _strength(cls, value: Any, info: ValidationInfo) -> float:
        if "init_image" not in _context(info)[2]:
            raise _problem("only with init_image (how far to move away from it)")
        strength = _number(value, 0.0, 1.0)
        steps = info.data.get("num_inference_steps")
        # diffusers runs int(steps * strength) of the steps: none at all is an error there
        if isinstance(steps, int) and int(steps * strength) < 1:
            raise _problem(f"with {steps} steps it must be at least {1 / steps:.3g} (got "
                           f"{_show(value)}): at least one step must run")
        return strength


def parse_family_input(
    raw: Mapping[str, Any],
    spec: FamilySpec,
    limits: SdLimits | None = None,
    *,
    fetch_urls: bool = False,
) -> FamilyInput:
    """Validate one job's input for ``spec``'s family against ``limits``.

    ``fetch_urls`` is the setting ``INPUT_URL_FETCH``: without it an image given as a URL is
    refused here, before any work. Raises ``InvalidInput`` naming every bad field, in one line.
    """
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"invalid input: must be a JSON object (got {_show(raw)})")
    given = frozenset(k for k, v in raw.items() if v is not None)
    context = {"spec": spec, "limits": limits or DEFAULT_LIMITS, "given": given,
               "fetch_urls": fetch_urls}
    try:
        return FamilyInput.model_validate(dict(raw), context=context)
    except ValidationError as exc:
        names = spec.field_names
        raise InvalidInput(
            describe_problems(exc, names, lambda key: _extra_field(key, names))
        ) from None


_RENAMED = {"image": "init_image", "mask_image": "mask", "strength": "prompt_strength"}
"""diffusers' own names for the template's image fields."""


def _extra_field(key: str, names: tuple[str, ...]) -> tuple[str, bool]:
    if key in ("num_outputs", "num_images"):
        return "give num_outputs or num_images, not both", False
    if key in _RENAMED:
        return f"unknown field (this worker calls it {_RENAMED[key]})", False
    if key in UNSUPPORTED_FIELDS:
        return "not supported by this worker", False
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    return f"unknown field{f' (did you mean {close[0]}?)' if close else ''}", True


def _context(info: ValidationInfo) -> tuple[FamilySpec, SdLimits, frozenset[str], bool]:
    """The family, the limits, the keys the job gave (not null) and whether URLs are fetched."""
    context = info.context if isinstance(info.context, dict) else {}
    spec = context.get("spec")
    limits = context.get("limits")
    given = context.get("given")
    return (
        spec if isinstance(spec, FamilySpec) else SPECS[Family.SD],
        limits if isinstance(limits, SdLimits) else DEFAULT_LIMITS,
        given if isinstance(given, frozenset) else frozenset(),
        bool(context.get("fetch_urls")),
    )


def _number(value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _problem(f"must be a number (got {_show(value)})")
    if not math.isfinite(value) or not low <= value <= high:
        raise _problem(f"must be between {low:g} and {high:g} (got {_show(value)})")
    return float(value)
