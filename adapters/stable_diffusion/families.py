"""Pipeline families: which diffusers pipeline a weights folder holds, and each one's defaults.

A family is chosen from the weights' ``model_index.json`` (its ``_class_name``, written by
``save_pretrained``), or forced with the setting ``SD_PIPELINE``:

======  ===============================  =========  =====  ========  ========  ===============
family  ``_class_name`` (any variant)    size       steps  guidance  negative  scheduler
======  ===============================  =========  =====  ========  ========  ===============
sd      StableDiffusionPipeline          512x512    25     7.5       yes       DDIM (choosable)
sdxl    StableDiffusionXLPipeline        1024x1024  25     7.5       yes       EULER (choosable)
sd3     StableDiffusion3Pipeline         1024x1024  28     7.0       yes       its flow-match
flux    FluxPipeline                     1024x1024  28     3.5       no        its flow-match
======  ===============================  =========  =====  ========  ========  ===============

Each :class:`FamilySpec` also names the family's img2img and inpaint classes, reached from the
same weights with diffusers' ``AutoPipelineForImage2Image.from_pipe`` /
``AutoPipelineForInpainting.from_pipe``. Flux's sides are multiples of 16 (its latents are
packed 2x2); the others' multiples of 8. The input schema of a family is in
:mod:`.family_schema`. This module reads no environment and imports neither torch nor diffusers.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path

from adapters.stable_diffusion.schema import SdLimits
from domain.errors import ModelError


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
