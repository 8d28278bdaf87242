"""The SDXL refiner's job fields: defaults, one line naming every bad field, ``use_refiner``
refused where no refiner can run, and the refiner's settings (which RunPod's worker-sdxl sends
with every job) ignored with a note where it does not run."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.stable_diffusion.families import FLUX_SCHNELL, SPECS, Family, FamilySpec
from adapters.stable_diffusion.schema import FamilyInput, field_names, parse_family_input
from domain.errors import InvalidInput

SDXL = SPECS[Family.SDXL]
IMAGE = "data:image/png;base64,iVBORw0KGgo="


def parse(raw: dict[str, Any], spec: FamilySpec = SDXL, refiner: bool = True) -> FamilyInput:
    return parse_family_input({"prompt": "a cat", **raw}, spec, refiner=refiner)


def problem(raw: dict[str, Any], spec: FamilySpec = SDXL, refiner: bool = True) -> str:
    with pytest.raises(InvalidInput) as raised:
        parse(raw, spec, refiner)
    return str(raised.value)


def test_with_a_refiner_loaded_text_to_image_jobs_refine_by_default() -> None:
    params = parse({"num_inference_steps": 30})

    assert (params.use_refiner, params.high_noise_frac, params.refiner_steps) == (True, 0.8, 30)


def test_image_jobs_and_workers_without_a_refiner_do_not_refine_by_default() -> None:
    with_image = parse({"init_image": IMAGE})
    no_refiner = parse({}, refiner=False)

    assert not with_image.use_refiner and with_image.high_noise_frac is None
    assert not no_refiner.use_refiner and no_refiner.high_noise_frac is None


def test_the_refiners_own_steps_and_fraction_are_kept() -> None:
    params = parse({"refiner_inference_steps": 12, "high_noise_frac": 0.7})

    assert (params.refiner_inference_steps, params.refiner_steps, params.high_noise_frac) == (
        12, 12, 0.7)


def test_every_bad_refiner_field_is_named_in_one_line() -> None:
    message = problem({"use_refiner": "yes", "refiner_inference_steps": 0,
                       "high_noise_frac": 1, "width": 100})

    assert "\n" not in message
    assert message.startswith("invalid input: width: must be a multiple of 8 (got 100); ")
    assert "use_refiner: must be true or false (got 'yes')" in message
    assert "refiner_inference_steps: must be at least 1 (got 0)" in message
    assert "high_noise_frac: must be between 0 and 1, both excluded (got 1)" in message


@pytest.mark.parametrize("frac", [0, 0.0, 1.0, -0.5, "0.5", True, float("nan")])
def test_high_noise_frac_must_be_a_number_strictly_between_0_and_1(frac: Any) -> None:
    assert "high_noise_frac: must be" in problem({"high_noise_frac": frac})


def test_refiner_steps_are_bounded_by_the_step_limit() -> None:
    assert "refiner_inference_steps: must be at most 500 (got 501)" in problem(
        {"refiner_inference_steps": 501})


def test_use_refiner_without_a_loaded_refiner_names_the_setting() -> None:
    message = problem({"use_refiner": True, "high_noise_frac": 0.5}, refiner=False)

    assert message == ("invalid input: use_refiner: this worker has no refiner loaded "
                       "(SD_REFINER_PATH is not set)")


def test_use_refiner_false_is_accepted_without_a_refiner() -> None:
    assert parse({"use_refiner": False}, refiner=False).use_refiner is False


def test_the_refiner_is_for_text_to_image_only() -> None:
    message = problem({"use_refiner": True, "init_image": IMAGE})

    assert "use_refiner: the refiner runs for text-to-image jobs only (not with init_image)" in (
        message)


def test_refiner_settings_that_would_change_nothing_are_ignored_with_a_note_saying_why() -> None:
    off = parse({"use_refiner": False, "refiner_inference_steps": 10, "high_noise_frac": 0.7})
    no_refiner = parse({"high_noise_frac": 0.7}, refiner=False)
    with_image = parse({"init_image": IMAGE, "refiner_inference_steps": 10})

    assert (off.refiner_inference_steps, off.high_noise_frac) == (None, None)
    assert off.notes == ("refiner_inference_steps, high_noise_frac: ignored: use_refiner is "
                         "false",)
    assert no_refiner.high_noise_frac is None and no_refiner.notes == (
        "high_noise_frac: ignored: this worker has no refiner loaded (SD_REFINER_PATH is not "
        "set)",)
    assert with_image.notes == ("refiner_inference_steps: ignored: the refiner runs for "
                                "text-to-image jobs only",)


def test_ignored_refiner_settings_are_still_checked() -> None:
    message = problem({"refiner_inference_steps": 0, "high_noise_frac": 1.5}, refiner=False)

    assert message == ("invalid input: refiner_inference_steps: must be at least 1 (got 0); "
                       "high_noise_frac: must be between 0 and 1, both excluded (got 1.5)")


def test_refiner_settings_that_are_used_leave_no_note() -> None:
    assert parse({"refiner_inference_steps": 12, "high_noise_frac": 0.7}).notes == ()


@pytest.mark.parametrize("spec", [SPECS[Family.SD], SPECS[Family.SD3], SPECS[Family.FLUX],
                                  FLUX_SCHNELL], ids=lambda spec: spec.name)
def test_other_families_refuse_use_refiner_and_ignore_the_refiners_settings_with_a_note(
    spec: FamilySpec,
) -> None:
    message = problem({"use_refiner": False}, spec=spec)
    params = parse({"refiner_inference_steps": 10, "high_noise_frac": 0.7}, spec=spec)

    assert message == (f"invalid input: use_refiner: not supported by {spec.label} pipelines "
                       "(only SDXL has a refiner)")
    assert "use_refiner" not in field_names(spec)
    assert (params.refiner_inference_steps, params.high_noise_frac) == (None, None)
    assert params.notes == (f"refiner_inference_steps, high_noise_frac: ignored: only SDXL has "
                            f"a refiner, and this worker runs {spec.label}",)
    assert not parse({}, spec=spec).use_refiner  # a refiner loaded changes nothing for them


def test_only_sdxl_lists_the_refiner_fields() -> None:
    assert {"use_refiner", "refiner_inference_steps", "high_noise_frac"} <= set(field_names(SDXL))
