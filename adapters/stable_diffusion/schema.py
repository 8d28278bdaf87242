"""A Stable Diffusion job's input, checked before any GPU work: the family's fields and defaults.

Names and defaults follow RunPod's SD worker templates, so inputs users already send keep working.

- **Every problem at once**, in one line: ``invalid input: width: must be a multiple of 8 (got
  100); num_outputs: must be at most 4 (got 9)``. Never a pydantic URL, a traceback or the prompt.
- **Strict types.** ``"512"`` and ``true`` are not numbers; ``512.0`` is a whole number; ``null``
  means "the default" for every field but ``prompt``.
- **Unknown fields are refused**, with a "did you mean" and the family's field list (a silently
  ignored typo changes the image with no hint why); a field the family lacks (Flux's
  ``negative_prompt``, SD3's and Flux's ``scheduler``) is refused by name, and diffusers' own
  names (``image``, ``mask_image``) point to the template's.
- **Templates' jobs run as they are**: their names for our fields (``image_url``, ``strength``)
  are accepted, and what they send that does nothing here is ignored with a note
  (:mod:`.template_fields`, :mod:`.refiner_fields`; :attr:`FamilyInput.notes`, for the output).
- Limits come from :class:`~.limits.SdLimits`, built from settings and handed in.

Defaults are the spec's: Flux schnell (:data:`.families.FLUX_SCHNELL`) runs 4 steps at guidance
0.0; a ``guidance_scale`` sent to it is accepted and has no effect (its transformer embeds none).
Every family takes ``init_image``, ``mask`` (with ``init_image``) and ``prompt_strength`` (0 to 1,
default 0.8, only with ``init_image``; ``int(steps * prompt_strength)`` must be at least 1).
Images are checked here for their shape only (base64, a data URL, or a URL when
``fetch_urls``) and loaded by :func:`.job_images.prepare_images`; without width/height an
``init_image``'s own size is used. SDXL also takes the refiner's fields (:mod:`.refiner_fields`).
Every family takes the LoRA fields (:mod:`.lora_fields`: ``loras``, and the shorthand ``lora``
with ``lora_scale``); what the worker's LoRA set-up allows is passed in as a ``LoraPolicy``.
No environment, no torch, no Pillow.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from adapters.stable_diffusion import lora_fields, refiner_fields, template_fields
from adapters.stable_diffusion.families import SPECS, Family, FamilySpec
from adapters.stable_diffusion.field_checks import (
    checked_integer,
    checked_text,
    describe_problems,
    field_problem,
    show_value,
    within_bounds,
)
from adapters.stable_diffusion.input_images import describe_reference_problem
from adapters.stable_diffusion.limits import (
    DEFAULT_LIMITS,
    MAX_GUIDANCE,
    MIN_SIDE,
    SEED_MAX,
    UNSUPPORTED_FIELDS,
    SdLimits,
)
from adapters.stable_diffusion.schedulers import SCHEDULER_NAMES, canonical_scheduler
from domain.errors import InvalidInput

DEFAULT_PROMPT_STRENGTH = 0.8


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
    use_refiner: bool = False
    refiner_inference_steps: int | None = None
    high_noise_frac: float | None = None
    loras: tuple[lora_fields.LoraRequest, ...] = ()
    lora: str | None = None
    lora_scale: float | None = None

    @field_serializer("loras")
    def _loras_out(self, loras: tuple[lora_fields.LoraRequest, ...]) -> list[dict[str, Any]]:
        return [dataclasses.asdict(lora) for lora in loras]

    @property
    def adapters(self) -> tuple[lora_fields.LoraRequest, ...]:
        """Every LoRA the job asks for (``loras``, or the ``lora`` shorthand), in order."""
        return lora_fields.requested(self.loras, self.lora, self.lora_scale)

    _notes: tuple[str, ...] = PrivateAttr(default=())

    @property
    def refiner_steps(self) -> int:  # the refiner's num_inference_steps: its own, or the base's
        return self.refiner_inference_steps or self.num_inference_steps

    @property
    def notes(self) -> tuple[str, ...]:
        """What the job sent that was ignored, and why: for the job's output."""
        return self._notes

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
        defaults |= refiner_fields.refiner_defaults(spec, given, _context(info)[4])
        return {**defaults, **given}

    @field_validator("prompt", mode="plain")
    @classmethod
    def _prompt(cls, value: Any, info: ValidationInfo) -> str:
        text = checked_text(value, _context(info)[1].max_prompt_chars)
        if not text.strip():
            raise field_problem("must not be empty")
        return text

    @field_validator("negative_prompt", mode="plain")
    @classmethod
    def _negative_prompt(cls, value: Any, info: ValidationInfo) -> str | None:
        spec, limits = _context(info)[:2]
        if not spec.negative_prompt:
            raise field_problem(f"not supported by {spec.label} pipelines (they take no negative "
                                "prompt)")
        return None if value is None else checked_text(value, limits.max_prompt_chars)

    @field_validator("width", "height", mode="plain")
    @classmethod
    def _side(cls, value: Any, info: ValidationInfo) -> int:
        spec, limits = _context(info)[:2]
        side = within_bounds(checked_integer(value), MIN_SIDE, limits.max_pixels // MIN_SIDE)
        if side % spec.side_multiple:
            raise field_problem(f"must be a multiple of {spec.side_multiple} (got {side})")
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
        return within_bounds(checked_integer(value), 1, _context(info)[1].max_outputs)

    @field_validator("num_inference_steps", mode="plain")
    @classmethod
    def _steps(cls, value: Any, info: ValidationInfo) -> int:
        return within_bounds(checked_integer(value), 1, _context(info)[1].max_steps)

    @field_validator("guidance_scale", mode="plain")
    @classmethod
    def _guidance(cls, value: Any) -> float:
        return _number(value, 0.0, MAX_GUIDANCE)

    @field_validator("scheduler", mode="plain")
    @classmethod
    def _scheduler(cls, value: Any, info: ValidationInfo) -> str:
        spec = _context(info)[0]
        if not spec.default_scheduler:
            raise field_problem(f"not supported by {spec.label} pipelines (they use their own "
                                "flow-matching scheduler)")
        if not isinstance(value, str):
            raise field_problem(f"must be a string (got {show_value(value)})")
        canonical = canonical_scheduler(value)
        if canonical is None:
            allowed = ", ".join(SCHEDULER_NAMES)
            raise field_problem(f"unknown {show_value(value)}, allowed: {allowed}")
        return canonical

    @field_validator("seed", mode="plain")
    @classmethod
    def _seed(cls, value: Any) -> int:
        return within_bounds(checked_integer(value), 0, SEED_MAX)

    @field_validator("init_image", "mask", mode="plain")
    @classmethod
    def _image(cls, value: Any, info: ValidationInfo) -> str:
        spec, _, given, urls, _ = _context(info)
        variant = spec.img2img if info.field_name == "init_image" else spec.inpaint
        if variant is None:
            raise field_problem(f"not supported by {spec.label} pipelines")
        if info.field_name == "mask" and "init_image" not in given:
            raise field_problem("needs init_image (the image to paint into)")
        problem = describe_reference_problem(value, fetch_urls=urls)
        if problem:
            raise field_problem(problem)
        return str(value)

    @field_validator("prompt_strength", mode="plain")
    @classmethod
    def _strength(cls, value: Any, info: ValidationInfo) -> float:
        if "init_image" not in _context(info)[2]:
            raise field_problem("only with init_image (how far to move away from it)")
        strength = _number(value, 0.0, 1.0)
        steps = info.data.get("num_inference_steps")
        # diffusers runs int(steps * strength) of the steps: none at all is an error there
        if isinstance(steps, int) and int(steps * strength) < 1:
            raise field_problem(f"with {steps} steps it must be at least {1 / steps:.3g} (got "
                                f"{show_value(value)}): at least one step must run")
        return strength

    @field_validator(*refiner_fields.REFINER_FIELDS, mode="plain")
    @classmethod
    def _refiner(cls, value: Any, info: ValidationInfo) -> Any:
        spec, limits, given, _, loaded = _context(info)
        return refiner_fields.checked_refiner_field(
            str(info.field_name), value, spec=spec, given=given, loaded=loaded, data=info.data,
            max_steps=limits.max_steps)


    @field_validator(*lora_fields.LORA_FIELDS, mode="plain")
    @classmethod
    def _lora(cls, value: Any, info: ValidationInfo) -> Any:
        context = info.context if isinstance(info.context, dict) else {}
        policy = context.get("loras")
        policy = policy if isinstance(policy, lora_fields.LoraPolicy) else lora_fields.OFF
        given = _context(info)[2]
        if info.field_name == "loras":
            return lora_fields.checked_loras(value, policy=policy, given=given)
        if info.field_name == "lora":
            return lora_fields.checked_lora(value, policy=policy)
        return lora_fields.checked_lora_scale(value, given=given)


def parse_family_input(
    raw: Mapping[str, Any],
    spec: FamilySpec,
    limits: SdLimits | None = None,
    *,
    fetch_urls: bool = False,
    refiner: bool = False,
    loras: lora_fields.LoraPolicy = lora_fields.OFF,
) -> FamilyInput:
    """Validate one job's input for ``spec``'s family against ``limits``.

    ``fetch_urls`` is the setting ``INPUT_URL_FETCH``: without it an image given as a URL is
    refused here, before any work; ``refiner`` (an SDXL refiner is loaded) makes
    ``use_refiner`` default to true; ``loras`` says which LoRA sources the worker takes (none
    by default). Raises ``InvalidInput`` naming every bad field, in one line.
    """
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"invalid input: must be a JSON object (got {show_value(raw)})")
    job, sent_as, notes = template_fields.translated(raw)
    given = frozenset(k for k, v in job.items() if v is not None)
    context = {"spec": spec, "limits": limits or DEFAULT_LIMITS, "given": given,
               "fetch_urls": fetch_urls, "refiner": refiner, "loras": loras}
    try:
        params = FamilyInput.model_validate(job, context=context)
    except ValidationError as exc:
        names = field_names(spec)
        raise InvalidInput(
            describe_problems(exc, names, lambda key: _extra_field(key, names), sent_as)
        ) from None
    used = {name: getattr(params, name) for name in refiner_fields.REFINER_FIELDS}
    ignored = refiner_fields.ignored_note(spec, given, refiner, used)
    params._notes = (*notes, *([ignored] if ignored else []))
    return params


def field_names(spec: FamilySpec) -> tuple[str, ...]:
    """Every key a job of ``spec``'s family may send (``num_images`` being an alias)."""
    return tuple(
        name
        for name in (*FamilyInput.model_fields, "num_images")
        if (name != "negative_prompt" or spec.negative_prompt)
        and (name != "scheduler" or spec.default_scheduler)
        and (name not in refiner_fields.REFINER_FIELDS or spec.family is Family.SDXL)
    )


_RENAMED = {"image": "init_image", "mask_image": "mask"}
"""diffusers' own names for the template's image fields."""


def _extra_field(key: str, names: tuple[str, ...]) -> tuple[str, bool]:
    if key in ("num_outputs", "num_images"):
        return "give num_outputs or num_images, not both", False
    if key in template_fields.TEMPLATE_NAMES:  # sent beside our name for the same field
        return f"give {template_fields.TEMPLATE_NAMES[key]} or {key}, not both", False
    if key in _RENAMED:
        return f"unknown field (this worker calls it {_RENAMED[key]})", False
    if key in UNSUPPORTED_FIELDS:
        return "not supported by this worker", False
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    return f"unknown field{f' (did you mean {close[0]}?)' if close else ''}", True


def _context(info: ValidationInfo) -> tuple[FamilySpec, SdLimits, frozenset[str], bool, bool]:
    """The family, the limits, the keys the job gave (not null), whether URLs are fetched and
    whether a refiner is loaded."""
    context = info.context if isinstance(info.context, dict) else {}
    spec = context.get("spec")
    limits = context.get("limits")
    given = context.get("given")
    return (
        spec if isinstance(spec, FamilySpec) else SPECS[Family.SD],
        limits if isinstance(limits, SdLimits) else DEFAULT_LIMITS,
        given if isinstance(given, frozenset) else frozenset(),
        bool(context.get("fetch_urls")),
        bool(context.get("refiner")),
    )


def _number(value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise field_problem(f"must be a number (got {show_value(value)})")
    if not math.isfinite(value) or not low <= value <= high:
        raise field_problem(f"must be between {low:g} and {high:g} (got {show_value(value)})")
    return float(value)
