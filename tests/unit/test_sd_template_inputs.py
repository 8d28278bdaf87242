"""Jobs written for RunPod's Stable Diffusion worker templates run here as they are.

``examples/templates/`` holds one ``test_input.json``-style job per template, written from the
template's documented fields at the version the README names (worker-sdxl 2.1.0,
worker-sdxl-turbo 1.1.1, worker-stable_diffusion_v1 and _v2): each is accepted by the family
it was written for, the template's names (``image_url``, ``strength``, ``num_images``) mean
ours, and what does nothing here is named in the job's notes rather than refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion.families import SPECS, Family
from adapters.stable_diffusion.schema import parse_family_input
from domain.errors import InvalidInput

TEMPLATES = Path(__file__).resolve().parents[2] / "examples" / "templates"
PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU"
           "5ErkJggg==")
NO_IMAGE_STRENGTH = ("{}: ignored: it sets how far an image-to-image job moves from its image, "
                     "and this job has none (RunPod's templates send it with text-to-image jobs "
                     "too)")


def template(name: str) -> dict[str, Any]:
    job = json.loads((TEMPLATES / f"{name}.json").read_text())
    assert set(job) == {"input"}
    return dict(job["input"])


def test_worker_sdxls_test_input_runs_on_sdxl_without_a_refiner_with_notes_on_what_it_ignores(
) -> None:
    params = parse_family_input(template("worker-sdxl"), SPECS[Family.SDXL])

    assert (params.width, params.height, params.num_inference_steps) == (1024, 1024, 25)
    assert (params.scheduler, params.num_outputs, params.seed) == ("EULER", 1, 42)
    assert params.init_image is None and params.prompt_strength is None
    assert not params.use_refiner
    assert params.notes == (
        NO_IMAGE_STRENGTH.format("strength"),
        "refiner_inference_steps, high_noise_frac: ignored: this worker has no refiner loaded "
        "(SD_REFINER_PATH is not set)",
    )


def test_worker_sdxls_test_input_uses_the_refiner_settings_when_a_refiner_is_loaded() -> None:
    params = parse_family_input(template("worker-sdxl"), SPECS[Family.SDXL], refiner=True)

    assert params.use_refiner
    assert (params.refiner_steps, params.high_noise_frac) == (50, 0.8)
    assert params.notes == (NO_IMAGE_STRENGTH.format("strength"),)


def test_worker_sdxls_image_url_and_strength_are_init_image_and_prompt_strength() -> None:
    job = {**template("worker-sdxl"), "image_url": f"data:image/png;base64,{PNG_B64}"}

    params = parse_family_input(job, SPECS[Family.SDXL], refiner=True)

    assert params.init_image == job["image_url"] and params.prompt_strength == 0.3
    assert not params.use_refiner  # the refiner runs for text-to-image only
    assert params.notes == ("refiner_inference_steps, high_noise_frac: ignored: the refiner runs "
                            "for text-to-image jobs only",)


def test_a_template_name_is_checked_and_reported_under_the_name_the_job_sent() -> None:
    job = {**template("worker-sdxl"), "image_url": "https://example.com/a.png", "strength": 2}

    with pytest.raises(InvalidInput) as raised:
        parse_family_input(job, SPECS[Family.SDXL])

    assert str(raised.value) == (
        "invalid input: image_url: URLs are not fetched by this worker (INPUT_URL_FETCH is off): "
        "send the image as base64 or a data URL; strength: must be between 0 and 1 (got 2)")


def test_a_template_name_and_ours_for_the_same_field_are_refused_together() -> None:
    job = {"prompt": "a", "init_image": PNG_B64, "image_url": PNG_B64}

    with pytest.raises(InvalidInput, match="image_url: give init_image or image_url, not both"):
        parse_family_input(job, SPECS[Family.SDXL])


def test_worker_sdxl_turbos_test_input_runs_on_sdxl_with_no_note() -> None:
    params = parse_family_input(template("worker-sdxl-turbo"), SPECS[Family.SDXL])

    assert (params.width, params.num_inference_steps, params.guidance_scale) == (512, 1, 0.0)
    assert params.notes == ()


@pytest.mark.parametrize(("name", "scheduler", "side"), [
    ("worker-stable_diffusion_v1", "K-LMS", 512),
    ("worker-stable_diffusion_v2", "DPM++", 768),
])
def test_the_sd_templates_inputs_run_on_sd_with_notes_on_what_they_ignore(
    name: str, scheduler: str, side: int
) -> None:
    params = parse_family_input(template(name), SPECS[Family.SD])

    assert (params.scheduler, params.width, params.num_inference_steps) == (scheduler, side, 50)
    assert params.prompt_strength is None
    assert params.notes == (
        NO_IMAGE_STRENGTH.format("prompt_strength"),
        "nsfw: ignored: this worker loads no safety checker (RunPod's templates load none either)",
    )


@pytest.mark.parametrize("name", ["DPM-M", "DPM-S", "EULER-D", "DPMSolverSinglestep"])
def test_the_templates_other_scheduler_names_are_accepted(name: str) -> None:
    params = parse_family_input({"prompt": "a", "scheduler": name}, SPECS[Family.SD])
    assert params.scheduler in ("DPM++", "DPM-S", "EULER")
