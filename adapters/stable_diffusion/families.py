"""Pipeline families: which diffusers pipeline a weights folder holds, and each one's defaults.

A family is chosen from the weights' ``model_index.json`` (its ``_class_name``, written by
``save_pretrained``), or forced with the setting ``SD_PIPELINE`` (any name in the first column):

============  ===============================  =========  =====  ========  ========  ==========
family        ``_class_name`` (any variant)    size       steps  guidance  negative  scheduler
============  ===============================  =========  =====  ========  ========  ==========
sd            StableDiffusionPipeline          512x512    25     7.5       yes       DDIM (any)
sdxl          StableDiffusionXLPipeline        1024x1024  25     7.5       yes       EULER (any)
sd3           StableDiffusion3Pipeline         1024x1024  28     7.0       yes       flow-match
flux          FluxPipeline                     1024x1024  28     3.5       no        flow-match
flux-schnell  FluxPipeline, schnell weights    1024x1024  4      0.0       no        flow-match
============  ===============================  =========  =====  ========  ========  ==========

Flux comes in two variants made by the same pipeline classes: FLUX.1-dev, guidance-distilled
(its transformer embeds the guidance: ``"guidance_embeds": true`` in ``transformer/config.json``),
and FLUX.1-schnell, timestep-distilled for about 4 steps, whose transformer embeds no guidance
(``"guidance_embeds": false``): diffusers ignores ``guidance_scale`` for it. Both are
``Family.FLUX`` (dtype, denoiser, sides, fields: everything but the defaults is the same);
schnell is the spec :data:`FLUX_SCHNELL`, told apart by :func:`detect_family`, or forced with
``flux-schnell`` whatever the transformer config says.

**T5 prompt length.** ``max_sequence_length`` is how many T5 tokens the prompt is padded or cut
to: 512 for FLUX.1-dev, 256 for schnell (its model card's value; diffusers' ``FluxPipeline``
defaults to 512 for both, and schnell was trained on 256). None for the families that take
none (SD, SDXL) and for SD3, which keeps its pipeline's own (256).

Each :class:`FamilySpec` also names the family's img2img and inpaint classes, reached from the
same weights with diffusers' ``AutoPipelineForImage2Image.from_pipe`` /
``AutoPipelineForInpainting.from_pipe``. Flux's sides are multiples of 16 (its latents are
packed 2x2); the others' multiples of 8. The input schema of a family is in
:mod:`.schema`. This module reads no environment and imports neither torch nor diffusers.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, replace
from pathlib import Path

from adapters.stable_diffusion.limits import SdLimits
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
    variant: str | None = None  # "schnell" for FLUX.1-schnell; None for a family's main model
    max_sequence_length: int | None = None  # T5 tokens (see above); None: the pipeline's own

    @property
    def name(self) -> str:
        """``flux-schnell`` for a variant, else the family's name (``sd``, ``flux``...)."""
        return f"{self.family.value}-{self.variant}" if self.variant else self.family.value

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
                   default_guidance=3.5, side_multiple=16, negative_prompt=False,
                   max_sequence_length=512),
    )
}

FLUX_SCHNELL = replace(
    SPECS[Family.FLUX], label="Flux schnell", default_steps=4, default_guidance=0.0,
    variant="schnell", max_sequence_length=256,
)
"""FLUX.1-schnell: Flux, made for 4 steps; ``guidance_scale`` is accepted (templates send it)
and has no effect, so its default is 0.0."""

_BY_CLASS: dict[str, Family] = {name: s.family for s in SPECS.values() for name in s.class_names}
BY_NAME: dict[str, FamilySpec] = {s.name: s for s in (*SPECS.values(), FLUX_SCHNELL)}
"""Every spec by the name ``SD_PIPELINE`` forces it with: ``sd`` ... ``flux``, ``flux-schnell``."""


def family_spec(name: str) -> FamilySpec:
    """The spec named ``sd``, ``sdxl``, ``sd3``, ``flux`` or ``flux-schnell`` (any case).

    Raises ``ValueError`` naming the known families.
    """
    try:
        return BY_NAME[name.strip().lower()]
    except KeyError:
        known = ", ".join(BY_NAME)
        raise ValueError(f"unknown pipeline family {name!r}: choose auto, {known}") from None


def detect_family(
    source: str | Path, forced: str = "auto", *, cache_dir: str | Path | None = None
) -> FamilySpec:
    """The family of the weights at ``source``, or ``forced`` unless it is ``auto``.

    ``source`` is a pipeline folder, or a hub id whose ``model_index.json`` is in the local
    Hugging Face cache (``cache_dir``, else the default one; never downloaded). Reads that file
    only (no weights) and, for Flux, ``transformer/config.json`` beside it: ``"guidance_embeds":
    false`` gives :data:`FLUX_SCHNELL`; a transformer config that is missing, unreadable or
    says anything else keeps Flux dev. Forcing ``flux`` tells schnell the same way whenever
    the folder is readable (a folder not yet there is Flux dev); forcing ``flux-schnell``
    gives :data:`FLUX_SCHNELL` whatever the folder holds. Raises ``ModelError`` when
    ``model_index.json`` is missing or unreadable or names a pipeline class of no known family.
    """
    if forced.strip().lower() != "auto":
        try:
            spec = family_spec(forced)
        except ValueError as exc:
            raise ModelError(f"SD_PIPELINE: {exc}") from None
        if spec is not SPECS[Family.FLUX]:  # another family, or schnell forced
            return spec
        return _flux_variant(spec, _index_path(source, cache_dir))
    index = _index_path(source, cache_dir)
    try:
        class_name = json.loads(index.read_text("utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelError(
            f"cannot tell the pipeline family of {str(source)!r}: {index.name} is missing or "
            f"unreadable ({type(exc).__name__}); set SD_PIPELINE to one of {', '.join(BY_NAME)}"
        ) from None
    family = _BY_CLASS.get(class_name) if isinstance(class_name, str) else None
    if family is None:
        known = ", ".join(sorted(_BY_CLASS))
        raise ModelError(
            f"{str(source)!r} holds a {class_name!r} pipeline, which podworker does not run "
            f"(known: {known})"
        )
    return _flux_variant(SPECS[family], index)


def _index_path(source: str | Path, cache_dir: str | Path | None) -> Path:
    """Where ``model_index.json`` of ``source`` is (a folder, else a hub id's cached copy)."""
    if Path(source).is_dir():
        return Path(source) / "model_index.json"
    return cached_index(str(source), cache_dir) or Path(source) / "model_index.json"


def _flux_variant(spec: FamilySpec, index: Path) -> FamilySpec:
    """:data:`FLUX_SCHNELL` when ``spec`` is Flux and the transformer config beside ``index``
    says ``"guidance_embeds": false``; else ``spec``."""
    if spec.family is not Family.FLUX:
        return spec
    try:
        config = json.loads((index.parent / "transformer" / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return spec
    schnell = isinstance(config, dict) and config.get("guidance_embeds") is False
    return FLUX_SCHNELL if schnell else spec


def cached_index(repo_id: str, cache_dir: str | Path | None = None) -> Path | None:
    """``model_index.json`` of hub id ``repo_id`` in the local cache, if it is there."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=cache_dir)
    except (ImportError, ValueError):  # no hub library, or not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def check_limits(spec: FamilySpec, limits: SdLimits) -> None:
    """Raise ``ValueError`` when ``limits`` would refuse a job that takes every default (the
    spec's own: a variant's, such as Flux schnell's 4 steps)."""
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
