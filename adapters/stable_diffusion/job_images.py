"""A job's input images, made ready for an image-to-image or inpainting pipeline call.

From a validated :class:`~.schema.FamilyInput` and an
:class:`~adapters.stable_diffusion.input_images.ImageLoader`:

- both images are loaded (``init_image`` as RGB, ``mask`` as greyscale, white = repaint), and
  problems with either are reported together, in one line, like the schema's;
- a ``mask`` must have ``init_image``'s size (a mask drawn for another picture is a mistake,
  not something to stretch silently);
- the output size is the job's ``width`` x ``height`` when it gave them; otherwise the init
  image's own size, scaled down to fit the pixel limit (aspect kept) and rounded down to the
  family's multiple (8, or 16 for Flux), at least 64 a side, and never past the pixel limit
  (an extreme aspect, whose short side is raised to 64, has its long side shrunk to fit);
- the images are resized to that size (Lanczos for the picture, bilinear for the mask), so the
  pipeline never resizes on its own.

:func:`pipeline_arguments` turns the result into diffusers' keywords: ``image``, ``strength``,
``mask_image`` and, for inpainting (whose pipelines take them), ``width``/``height``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from adapters.stable_diffusion.families import FamilySpec
from adapters.stable_diffusion.input_images import ImageLoader
from adapters.stable_diffusion.limits import MIN_SIDE, SdLimits
from adapters.stable_diffusion.schema import FamilyInput
from domain.errors import InvalidInput

_PREFIX = "invalid input: "


@dataclass(frozen=True)
class JobImages:
    """The task, the output size, and the images already at that size (None: not given)."""

    task: str  # "text2img", "img2img" or "inpaint"
    width: int
    height: int
    init: Any = None
    mask: Any = None


def task_of(params: FamilyInput) -> str:
    if params.init_image is None:
        return "text2img"
    return "img2img" if params.mask is None else "inpaint"


def pipeline_class_name(spec: FamilySpec, task: str) -> str:
    """The diffusers class for ``task`` in ``spec``'s family (validated inputs ask only for
    tasks the family has)."""
    name = {"text2img": spec.text2img, "img2img": spec.img2img, "inpaint": spec.inpaint}[task]
    if name is None:
        raise InvalidInput(f"invalid input: {spec.label} pipelines have no {task}")
    return name


def prepare_images(
    params: FamilyInput, spec: FamilySpec, loader: ImageLoader, limits: SdLimits
) -> JobImages:
    """Load, check and resize the job's images. Raises ``InvalidInput`` naming every problem."""
    task = task_of(params)
    if params.init_image is None:
        assert params.width is not None and params.height is not None  # the schema's default
        return JobImages(task, params.width, params.height)
    problems: list[str] = []
    loaded: dict[str, Any] = {}
    for field, reference, mode in (("init_image", params.init_image, "RGB"),
                                   ("mask", params.mask, "L")):
        if reference is None:
            continue
        try:
            loaded[field] = loader.load(field, reference, mode=mode)
        except InvalidInput as exc:
            problems.append(str(exc).removeprefix(_PREFIX))
    init: Any = loaded.get("init_image")
    mask: Any = loaded.get("mask")
    if init is not None and mask is not None and mask.size != init.size:
        problems.append(f"mask: {mask.width}x{mask.height} is not the size of init_image "
                        f"({init.width}x{init.height})")
    if problems:
        raise InvalidInput(_PREFIX + "; ".join(problems))
    width, height = target_size(init.size, (params.width, params.height), spec, limits)
    from PIL import Image

    init = init.resize((width, height), Image.Resampling.LANCZOS)
    if mask is not None:
        mask = mask.resize((width, height), Image.Resampling.BILINEAR)
    return JobImages(task, width, height, init, mask)


def target_size(
    image_size: tuple[int, int],
    requested: tuple[int | None, int | None],
    spec: FamilySpec,
    limits: SdLimits,
) -> tuple[int, int]:
    """The output size: ``requested`` when both are given, else from the image (see above)."""
    if requested[0] is not None and requested[1] is not None:
        return requested[0], requested[1]
    width, height = image_size
    scale = min(1.0, math.sqrt(limits.max_pixels / (width * height)))
    step = spec.side_multiple
    low = max(MIN_SIDE, step)

    def side(length: int) -> int:
        return max(low, int(length * scale) // step * step)

    out_w, out_h = side(width), side(height)
    if out_w * out_h > limits.max_pixels:
        # a side raised to the minimum (an extreme aspect, say 65536x16) made the image larger
        # than the limit again: the long side is shrunk to fit (the total is checked after)
        if out_w >= out_h:
            out_w = max(low, limits.max_pixels // out_h // step * step)
        else:
            out_h = max(low, limits.max_pixels // out_w // step * step)
    if out_w * out_h > limits.max_pixels:
        raise InvalidInput(
            f"{_PREFIX}init_image: {width}x{height} cannot be fitted into SD_MAX_PIXELS "
            f"({limits.max_pixels}) at {low} pixels a side or more; give width and height"
        )
    return out_w, out_h


def pipeline_arguments(params: FamilyInput, images: JobImages) -> dict[str, Any]:
    """The keywords a diffusers call needs for the job's task (besides prompt, steps, etc.)."""
    if images.task == "text2img":
        return {"width": images.width, "height": images.height}
    arguments: dict[str, Any] = {"image": images.init, "strength": params.prompt_strength}
    if images.task == "inpaint":
        arguments |= {"mask_image": images.mask, "width": images.width, "height": images.height}
    return arguments
