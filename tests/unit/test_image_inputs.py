"""Input images: reading base64 and data URLs, decoding, sizing for the job, pipeline keywords.

No network and no ML library: Pillow only. URL fetching is tested in
tests/security/test_input_image_urls.py.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest

from adapters.stable_diffusion.families import family_spec
from adapters.stable_diffusion.input_images import ImageInputLimits, ImageLoader, reference_kind
from adapters.stable_diffusion.job_images import (
    pipeline_arguments,
    prepare_images,
    target_size,
    task_of,
)
from adapters.stable_diffusion.limits import SdLimits
from adapters.stable_diffusion.schema import parse_family_input
from domain.errors import InvalidInput

Image = pytest.importorskip("PIL.Image")

LOADER = ImageLoader(ImageInputLimits())


def encoded(image: Any, fmt: str = "PNG", **save: Any) -> str:
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return base64.b64encode(out.getvalue()).decode()


@pytest.mark.parametrize(
    ("value", "kind"),
    [("https://x/y.png", "url"), ("  HTTP://x", "url"), ("data:image/png;base64,AA", "data"),
     ("iVBORw0KGgo=", "base64")],
)
def test_a_reference_is_told_by_its_start(value: str, kind: str) -> None:
    assert reference_kind(value) == kind


def test_base64_with_line_breaks_and_a_data_url_give_the_same_image() -> None:
    text = encoded(Image.new("RGB", (16, 8), (1, 2, 3)))
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))

    plain = LOADER.load("init_image", wrapped)
    url = LOADER.load("init_image", f"data:image/png;base64,{text}")

    assert plain.size == url.size == (16, 8)
    assert plain.tobytes() == url.tobytes()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_and_webp_are_accepted(fmt: str) -> None:
    assert LOADER.load("init_image", encoded(Image.new("RGB", (8, 8)), fmt)).mode == "RGB"


def test_a_transparent_image_becomes_rgb_and_a_mask_greyscale() -> None:
    rgba = encoded(Image.new("RGBA", (8, 8), (255, 0, 0, 0)))

    assert LOADER.load("init_image", rgba).mode == "RGB"
    assert LOADER.load("mask", rgba, mode="L").mode == "L"


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the stored 16x8 is shown 8x16
    sideways = encoded(Image.new("RGB", (16, 8)), "JPEG", exif=exif)

    assert LOADER.load("init_image", sideways).size == (8, 16)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("data:image/png;base64,!!!!", "is not valid base64"),
        ("QUJD", "not a PNG, JPEG or WEBP image"),
        ("", "must not be empty"),
    ],
)
def test_bad_references_are_refused_with_the_fields_name(value: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=f"^invalid input: mask: {message}"):
        LOADER.load("mask", value)


def test_the_pixel_limit_is_checked() -> None:
    loader = ImageLoader(ImageInputLimits(max_pixels=99))
    with pytest.raises(InvalidInput, match="init_image: 10x10 is 100 pixels, more than the limit"):
        loader.load("init_image", encoded(Image.new("RGB", (10, 10))))


# --- sizing for the job ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "image", "requested", "expected"),
    [
        ("sd", (100, 60), (None, None), (96, 64)),  # rounded down to 8, at least 64
        ("flux", (100, 60), (None, None), (96, 64)),
        ("flux", (500, 300), (None, None), (496, 288)),  # multiples of 16
        ("sdxl", (4000, 3000), (None, None), (1176, 880)),  # scaled to fit the pixel limit
        ("sd", (4000, 3000), (512, 768), (512, 768)),  # a size given is a size kept
        # extreme aspects: the short side is raised to 64, so the long one is shrunk to fit
        ("sd", (65536, 16), (None, None), (16384, 64)),
        ("sd", (16, 65536), (None, None), (64, 16384)),
        ("flux", (16_000_000, 1), (None, None), (16384, 64)),
        ("sdxl", (100_000, 40), (None, None), (16384, 64)),
    ],
)
def test_the_output_size_comes_from_the_job_or_else_the_image(
    family: str, image: tuple[int, int], requested: Any, expected: tuple[int, int]
) -> None:
    size = target_size(image, requested, family_spec(family), SdLimits())

    assert size == expected
    assert size[0] * size[1] <= SdLimits().max_pixels


def test_prepared_images_are_resized_to_the_output_size() -> None:
    spec = family_spec("sdxl")
    params = parse_family_input(
        {"prompt": "a", "init_image": encoded(Image.new("RGB", (200, 100))),
         "mask": encoded(Image.new("L", (200, 100), 255)), "width": 128, "height": 64},
        spec,
    )

    images = prepare_images(params, spec, LOADER, SdLimits())

    assert (images.task, images.width, images.height) == ("inpaint", 128, 64)
    assert images.init.size == images.mask.size == (128, 64)
    assert (images.init.mode, images.mask.mode) == ("RGB", "L")


def test_each_task_gets_the_keywords_its_diffusers_pipeline_takes() -> None:
    spec = family_spec("sd")
    picture = encoded(Image.new("RGB", (64, 64)))
    by_task = {}
    for raw in ({"prompt": "a"}, {"prompt": "a", "init_image": picture},
                {"prompt": "a", "init_image": picture, "mask": picture}):
        params = parse_family_input(raw, spec)
        images = prepare_images(params, spec, LOADER, SdLimits())
        by_task[task_of(params)] = sorted(pipeline_arguments(params, images))

    assert by_task == {
        "text2img": ["height", "width"],
        "img2img": ["image", "strength"],  # SD's and SDXL's img2img take no width/height
        "inpaint": ["height", "image", "mask_image", "strength", "width"],
    }
