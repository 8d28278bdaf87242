"""Image-to-image and inpainting through the adapter, for every family, from base64 inputs.

The model keeps one pipeline per task built with ``from_pipe`` from the text-to-image one (no
second copy of the weights); a job with ``init_image`` runs the family's img2img class, one
with ``mask`` too its inpainting class. Images are sent as data URLs or plain base64, 64 to 96
px, with 4 steps: seconds per family on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from adapters.stable_diffusion.model import StableDiffusionModel
from domain.errors import ExecutionTimeout, InvalidInput
from tests.support.sd_jobs import StepContext, box_mask, data_url, decode, noise_image, png_base64

pytest.importorskip("torch")
pytest.importorskip("diffusers")

FAMILIES = ("flux", "sd", "sd3", "sdxl")
JOB: dict[str, Any] = {"prompt": "a red barn in a field", "num_inference_steps": 4, "seed": 5}


@pytest.fixture(scope="module", params=FAMILIES)
def model(request: pytest.FixtureRequest,
          tiny_family_model: Callable[[str], StableDiffusionModel]) -> StableDiffusionModel:
    return tiny_family_model(str(request.param))


@pytest.fixture(scope="module")
def picture() -> Any:
    return noise_image((64, 64), seed=1)


def test_img2img_and_inpaint_share_the_text_to_image_weights(model: StableDiffusionModel) -> None:
    assert model.spec is not None
    variants = model.variants
    names = {task: type(pipe).__name__ for task, pipe in variants.items()}
    assert names == {"text2img": model.spec.text2img, "img2img": model.spec.img2img,
                     "inpaint": model.spec.inpaint}
    assert variants["img2img"].vae is variants["text2img"].vae
    assert variants["inpaint"].text_encoder is variants["text2img"].text_encoder


def test_img2img_from_a_data_url_is_deterministic_and_runs_strength_times_steps(
    model: StableDiffusionModel, picture: Any
) -> None:
    job = {**JOB, "init_image": data_url(picture), "prompt_strength": 0.5}
    ctx = StepContext()

    first = model.run(job, ctx)
    again = model.run(job, StepContext())

    assert ctx.updates == [{"step": 1, "of": 2}, {"step": 2, "of": 2}]  # int(4 * 0.5) steps
    assert first[0]["seed"] == 5
    assert first[0]["image"].data == again[0]["image"].data
    with decode(first[0]["image"]) as image:
        assert (image.format, image.size) == ("PNG", (64, 64))


def test_img2img_depends_on_the_init_image(model: StableDiffusionModel, picture: Any) -> None:
    other = noise_image((64, 64), seed=2)
    # a low strength: the tiny random Flux lets little of the init image through at 0.8
    made = [model.run({**JOB, "init_image": data_url(image), "prompt_strength": 0.3},
                      StepContext())[0]["image"].data for image in (picture, other)]
    assert made[0] != made[1]


def test_img2img_without_a_size_makes_the_init_images_size(model: StableDiffusionModel) -> None:
    wide = noise_image((96, 64), seed=3)
    result = model.run({**JOB, "init_image": png_base64(wide)}, StepContext())
    with decode(result[0]["image"]) as image:
        assert image.size == (96, 64)


def test_inpainting_from_plain_base64_makes_the_requested_outputs(
    model: StableDiffusionModel, picture: Any
) -> None:
    job = {**JOB, "init_image": png_base64(picture),
           "mask": png_base64(box_mask((64, 64), (16, 16, 48, 48))), "num_outputs": 2}
    ctx = StepContext()

    result = model.run(job, ctx)

    assert [item["seed"] for item in result] == [5, 6]
    assert ctx.updates[-1] == {"step": 3, "of": 3}  # int(4 * 0.8), the default strength
    for item in result:
        with decode(item["image"]) as image:
            assert image.size == (64, 64)
    assert model.run(job, StepContext())[0]["image"].data == result[0]["image"].data


def test_an_img2img_job_stops_part_way_when_its_cancel_check_raises(
    model: StableDiffusionModel, picture: Any
) -> None:
    ctx = StepContext(stop_after_step=1)
    with pytest.raises(ExecutionTimeout):
        model.run({**JOB, "init_image": data_url(picture)}, ctx)
    assert ctx.updates == [{"step": 1, "of": 3}]


def test_bad_images_are_refused_together_in_one_error(model: StableDiffusionModel,
                                                      picture: Any) -> None:
    job = {**JOB, "init_image": "bm90IGFuIGltYWdl",  # base64 of "not an image"
           "mask": png_base64(box_mask((32, 32), (0, 0, 8, 8)))}
    with pytest.raises(InvalidInput) as caught:
        model.run(job, StepContext())
    assert "init_image: " in str(caught.value)

    mismatched = {**JOB, "init_image": data_url(picture),
                  "mask": data_url(box_mask((32, 32), (0, 0, 8, 8)))}
    with pytest.raises(InvalidInput, match=r"mask: 32x32 is not the size of init_image \(64x64\)"):
        model.run(mismatched, StepContext())
