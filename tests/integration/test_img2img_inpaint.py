"""Image-to-image and inpainting on the tiny SD 1.x pipeline, from base64 inputs, end to end.

The path is the one the model adapter is to take: the family's schema
(:func:`parse_family_input`), the job's images loaded and sized (:func:`prepare_images`), the
pipeline class for the task (:func:`pipeline_class_name`) and its keywords
(:func:`pipeline_arguments`), then diffusers' own ``StableDiffusionImg2ImgPipeline`` /
``StableDiffusionInpaintPipeline`` loaded from the tiny weights with ``local_files_only``.
Images are 64 to 128 px with 4 steps: seconds on a CPU.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion.families import family_spec
from adapters.stable_diffusion.input_images import ImageInputLimits, ImageLoader
from adapters.stable_diffusion.job_images import (
    pipeline_arguments,
    pipeline_class_name,
    prepare_images,
)
from adapters.stable_diffusion.limits import SdLimits
from adapters.stable_diffusion.schema import parse_family_input
from domain.errors import InvalidInput

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

SD = family_spec("sd")
LIMITS = SdLimits()


def data_url(image: Any, fmt: str = "PNG") -> str:
    out = io.BytesIO()
    image.save(out, fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(out.getvalue()).decode()}"


def noise(size: tuple[int, int], seed: int = 0) -> Any:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def corner_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Any:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


@pytest.fixture(scope="module")
def pipes(tiny_sd_path: Path) -> dict[str, Any]:
    """One pipeline per task, sharing the weights (``from_pipe``), as an adapter would keep."""
    base = diffusers.StableDiffusionPipeline.from_pretrained(
        str(tiny_sd_path), local_files_only=True, safety_checker=None,
        requires_safety_checker=False,
    )
    made = {"text2img": base}
    for task in ("img2img", "inpaint"):
        made[task] = getattr(diffusers, pipeline_class_name(SD, task)).from_pipe(base)
    for pipe in made.values():
        pipe.set_progress_bar_config(disable=True)
    return made


def run(pipes: dict[str, Any], raw: dict[str, Any]) -> Any:
    """One job, the way the model adapter is to run it; returns the first image as an array."""
    params = parse_family_input(raw, SD, LIMITS)
    images = prepare_images(params, SD, ImageLoader(ImageInputLimits()), LIMITS)
    result = pipes[images.task](
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.guidance_scale,
        generator=torch.Generator().manual_seed(params.seed or 0),
        **pipeline_arguments(params, images),
    )
    return np.asarray(result.images[0]).astype(float)


def job(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a photo of a cat", "num_inference_steps": 4, "seed": 1, **fields}


def test_img2img_makes_an_image_of_the_jobs_size_from_a_base64_image(pipes: dict[str, Any]) -> None:
    out = run(pipes, job(init_image=data_url(noise((96, 80))), width=64, height=64))
    assert out.shape == (64, 64, 3)


def test_img2img_without_a_size_keeps_the_init_images_size(pipes: dict[str, Any]) -> None:
    out = run(pipes, job(init_image=data_url(noise((96, 72)))))
    assert out.shape == (72, 96, 3)


def test_img2img_starts_from_the_init_image_and_is_deterministic_for_a_seed(
    pipes: dict[str, Any],
) -> None:
    # a random-weight VAE hears its input faintly: a light strength keeps the most of it
    blue = data_url(Image.new("RGB", (64, 64), (20, 20, 240)))
    red = data_url(Image.new("RGB", (64, 64), (240, 20, 20)))
    first = run(pipes, job(init_image=blue, prompt_strength=0.25))
    again = run(pipes, job(init_image=blue, prompt_strength=0.25))
    other_image = run(pipes, job(init_image=red, prompt_strength=0.25))
    text_only = run(pipes, job(width=64, height=64))

    assert (first == again).all()
    assert np.abs(first - other_image).mean() > 1.0
    assert np.abs(first - text_only).mean() > 1.0


def test_img2img_accepts_plain_base64_and_jpeg(pipes: dict[str, Any]) -> None:
    jpeg = data_url(noise((64, 64)), "JPEG").split(",", 1)[1]
    assert run(pipes, job(init_image=jpeg)).shape == (64, 64, 3)


def test_prompt_strength_changes_how_far_the_image_moves(pipes: dict[str, Any]) -> None:
    init = noise((64, 64), 3)
    light = run(pipes, job(init_image=data_url(init), prompt_strength=0.25))
    heavy = run(pipes, job(init_image=data_url(init), prompt_strength=1.0))
    assert np.abs(light - heavy).mean() > 1.0


def test_inpainting_repaints_the_masked_part_and_keeps_the_rest(pipes: dict[str, Any]) -> None:
    init = data_url(noise((128, 128)))
    mask = data_url(corner_mask((128, 128), (0, 0, 48, 48)))

    one = run(pipes, job(init_image=init, mask=mask, seed=1))
    two = run(pipes, job(init_image=init, mask=mask, seed=2))

    assert one.shape == (128, 128, 3)
    inside = np.abs(one - two)[:48, :48].mean()
    far_outside = np.abs(one - two)[80:, 80:].mean()
    assert inside > 5 * far_outside  # only the masked corner depends on the seed


def test_a_mask_of_another_size_and_a_bad_image_are_named_together(tmp_path: Path) -> None:
    params = parse_family_input(
        job(init_image=data_url(noise((64, 64))),
            mask=data_url(corner_mask((32, 32), (0, 0, 8, 8)))),
        SD,
    )
    with pytest.raises(InvalidInput, match=r"mask: 32x32 is not the size of init_image \(64x64\)"):
        prepare_images(params, SD, ImageLoader(ImageInputLimits()), LIMITS)

    both_bad = parse_family_input(job(init_image="aGVsbG8=", mask="d29ybGQ="), SD)
    with pytest.raises(InvalidInput) as caught:
        prepare_images(both_bad, SD, ImageLoader(ImageInputLimits()), LIMITS)
    assert str(caught.value) == (
        "invalid input: init_image: not a PNG, JPEG or WEBP image; "
        "mask: not a PNG, JPEG or WEBP image"
    )
