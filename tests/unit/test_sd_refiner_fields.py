"""The SDXL refiner's job fields: defaults, one line naming every bad field, and refusals for
the other families and for workers with no refiner loaded."""

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


def test_refiner_settings_that_would_change_nothing_are_refused() -> None:
    off = problem({"use_refiner": False, "refiner_inference_steps": 10, "high_noise_frac": 0.7})
    no_refiner = problem({"high_noise_frac": 0.7}, refiner=False)

    assert off == ("invalid input: refiner_inference_steps: only when the refiner runs "
                   "(use_refiner); high_noise_frac: only when the refiner runs (use_refiner)")
    assert no_refiner == "invalid input: high_noise_frac: only when the refiner runs (use_refiner)"


@pytest.mark.parametrize("spec", [SPECS[Family.SD], SPECS[Family.SD3], SPECS[Family.FLUX],
                                  FLUX_SCHNELL], ids=lambda spec: spec.name)
def test_other_families_refuse_every_refiner_field_by_name(spec: FamilySpec) -> None:
    message = problem({"use_refiner": False, "refiner_inference_steps": 10,
                       "high_noise_frac": 0.7}, spec=spec)

    for field in ("use_refiner", "refiner_inference_steps", "high_noise_frac"):
        assert f"{field}: not supported by {spec.label} pipelines (only SDXL has a refiner)" in (
            message)
    assert "use_refiner" not in field_names(spec)
    assert not parse({}, spec=spec).use_refiner  # a refiner loaded changes nothing for them


def test_only_sdxl_lists_the_refiner_fields() -> None:
    assert {"use_refiner", "refiner_inference_steps", "high_noise_frac"} <= set(field_names(SDXL))
