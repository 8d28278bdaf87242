"""Each pipeline family's input schema: one line for every problem, image inputs, any JSON object.

Pure: no torch, no diffusers, no network. Detection and defaults are in test_sd_families.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.stable_diffusion.families import SPECS, Family
from adapters.stable_diffusion.limits import SdLimits
from adapters.stable_diffusion.schema import field_names, parse_family_input
from domain.errors import InvalidInput
from tests.support.sd_family_kit import ALL, PNG_B64, problems, spec

# --- one line for every problem --------------------------------------------------------------


@pytest.mark.parametrize("family", ALL)
def test_several_bad_fields_are_named_in_one_line(family: str) -> None:
    message = problems(
        {"prompt": "", "width": 100, "num_outputs": 0, "guidance_scale": "high", "seed": -1},
        family,
    )

    assert message.startswith("invalid input: prompt: must not be empty; width: ")
    for part in ("num_outputs: must be at least 1", "guidance_scale: must be a number",
                 "seed: must be at least 0"):
        assert part in message
    assert "\n" not in message


def test_flux_refuses_a_negative_prompt_and_a_scheduler_by_name() -> None:
    message = problems({"prompt": "a", "negative_prompt": "b", "scheduler": "DDIM"}, "flux")

    assert "negative_prompt: not supported by Flux pipelines" in message
    assert "scheduler: not supported by Flux pipelines" in message


def test_sd3_takes_a_negative_prompt_but_no_scheduler() -> None:
    parsed = parse_family_input({"prompt": "a", "negative_prompt": "blurry"}, spec("sd3"))
    assert parsed.negative_prompt == "blurry"
    assert "scheduler: not supported by Stable Diffusion 3" in problems(
        {"prompt": "a", "scheduler": "EULER"}, "sd3"
    )


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_sd_and_sdxl_take_a_scheduler_by_any_alias(family: str) -> None:
    parsed = parse_family_input({"prompt": "a", "scheduler": "k_euler_ancestral"}, spec(family))
    assert parsed.scheduler == "EULER-A"


def test_flux_sides_are_multiples_of_16_and_the_others_of_8() -> None:
    assert "width: must be a multiple of 16 (got 520)" in problems(
        {"prompt": "a", "width": 520}, "flux"
    )
    for family in ("sd", "sdxl", "sd3"):
        assert parse_family_input({"prompt": "a", "width": 520}, spec(family)).width == 520


@pytest.mark.parametrize("family", ALL)
def test_the_pixel_cap_and_the_step_cap_come_from_the_limits(family: str) -> None:
    limits = SdLimits(max_pixels=1024 * 1024, max_steps=30, max_outputs=2)
    message = problems(
        {"prompt": "a", "width": 2048, "height": 1024, "num_inference_steps": 31,
         "num_images": 3}, family, limits=limits,
    )

    assert "width x height: 2048x1024 is 2097152 pixels, more than the limit of 1048576" in message
    assert "num_inference_steps: must be at most 30 (got 31)" in message
    assert "num_images: must be at most 2 (got 3)" in message


def test_an_unknown_field_gets_a_suggestion_and_the_familys_own_field_list() -> None:
    message = problems({"prompt": "a", "guidance_scal": 3}, "flux")

    assert "guidance_scal: unknown field (did you mean guidance_scale?)" in message
    known = message.split("known fields: ")[1].split(", ")
    assert "negative_prompt" not in known and "scheduler" not in known
    assert {"init_image", "mask", "prompt_strength", "num_images"} <= set(known)


def test_diffusers_own_names_point_to_the_template_names() -> None:
    message = problems({"prompt": "a", "image": PNG_B64, "mask_image": PNG_B64}, "sdxl")

    assert "image: unknown field (this worker calls it init_image)" in message
    assert "mask_image: unknown field (this worker calls it mask)" in message
    assert "known fields" not in message  # nothing simply unknown


def test_template_fields_this_worker_lacks_are_called_unsupported() -> None:
    assert "controlnet: not supported by this worker" in problems(
        {"prompt": "a", "controlnet": "x"}, "sd")


def test_types_are_strict_as_in_the_sd_schema() -> None:
    message = problems({"prompt": 5, "width": "512", "num_outputs": True, "seed": 1.5}, "sdxl")

    assert "prompt: must be a string (got 5)" in message
    assert "width: must be an integer (got '512')" in message
    assert "num_outputs: must be an integer (got true)" in message
    assert "seed: must be an integer (got 1.5)" in message


def test_an_input_that_is_not_an_object_is_refused() -> None:
    assert problems(["prompt"], "sd") == "invalid input: must be a JSON object (got an array)"


# --- image inputs in the schema --------------------------------------------------------------


@pytest.mark.parametrize("family", ALL)
def test_every_family_takes_an_init_image_a_mask_and_a_prompt_strength(family: str) -> None:
    parsed = parse_family_input(
        {"prompt": "a", "init_image": PNG_B64, "mask": f"data:image/png;base64,{PNG_B64}",
         "prompt_strength": 0.3}, spec(family),
    )

    assert parsed.init_image == PNG_B64
    assert parsed.mask is not None and parsed.mask.startswith("data:image/png;base64,")
    assert parsed.prompt_strength == 0.3


def test_with_an_init_image_and_no_size_the_size_is_left_to_the_image() -> None:
    parsed = parse_family_input({"prompt": "a", "init_image": PNG_B64}, spec("sdxl"))

    assert (parsed.width, parsed.height) == (None, None)
    assert parsed.prompt_strength == 0.8


def test_with_an_init_image_and_one_side_given_the_other_is_the_default() -> None:
    parsed = parse_family_input({"prompt": "a", "init_image": PNG_B64, "width": 768},
                                spec("sdxl"))
    assert (parsed.width, parsed.height) == (768, 1024)


def test_a_mask_without_an_init_image_is_refused() -> None:
    message = problems({"prompt": "a", "mask": PNG_B64, "prompt_strength": 0.5}, "sd")

    assert message == "invalid input: mask: needs init_image (the image to paint into)"


def test_a_strength_without_an_init_image_is_ignored_with_a_note() -> None:
    parsed = parse_family_input({"prompt": "a", "prompt_strength": 0.8}, spec("sd"))

    assert parsed.prompt_strength is None
    assert parsed.notes == ("prompt_strength: ignored: it sets how far an image-to-image job "
                            "moves from its image, and this job has none (RunPod's templates "
                            "send it with text-to-image jobs too)",)


def test_a_mask_next_to_a_bad_init_image_is_not_blamed_for_it() -> None:
    message = problems({"prompt": "a", "init_image": 5, "mask": PNG_B64}, "sd")
    assert "init_image: must be a string" in message
    assert "mask" not in message


@pytest.mark.parametrize("strength", [-0.1, 1.01, float("nan"), "0.5", True])
def test_prompt_strength_is_a_number_from_0_to_1(strength: Any) -> None:
    message = problems({"prompt": "a", "init_image": PNG_B64, "prompt_strength": strength}, "sd")
    assert message.startswith("invalid input: prompt_strength: must be")


def test_an_image_url_is_refused_unless_fetching_is_on() -> None:
    raw = {"prompt": "a", "init_image": "https://images.example/cat.png"}

    assert "INPUT_URL_FETCH is off" in problems(raw, "sd")
    assert parse_family_input(raw, spec("sd"), fetch_urls=True).init_image == raw["init_image"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "must not be empty"),
        ("not base64 at all!", "must be base64, a data URL"),
        ("data:image/png,rawbytes", "a data URL must be data:<type>;base64,<data>"),
        ({"url": "x"}, "must be a string"),
        ("ftp://images.example/cat.png", "must be base64"),
    ],
)
def test_an_image_reference_of_the_wrong_shape_is_refused_before_any_work(
    value: Any, expected: str
) -> None:
    assert expected in problems({"prompt": "a", "init_image": value}, "flux", fetch_urls=True)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6,
)


@given(
    st.sampled_from(ALL),
    st.dictionaries(
        st.sampled_from([*field_names(SPECS[Family.SD]), "image", "extra"]) | st.text(max_size=8),
        _json,
        max_size=8,
    ),
)
def test_any_json_object_is_accepted_or_refused_with_one_clean_line(
    family: str, raw: dict[str, Any]
) -> None:
    try:
        parsed = parse_family_input(raw, spec(family))
    except InvalidInput as exc:
        message = str(exc)
        assert message.startswith("invalid input: ")
        # field names come from the generated input; the word must not come from the library
        assert "\n" not in message
        assert "pydantic" not in message.replace(" pydantic: unknown field", "")
    else:
        assert parsed.prompt.strip()
        if parsed.width is not None and parsed.height is not None:
            assert parsed.width * parsed.height <= SdLimits().max_pixels


def test_a_prompt_strength_that_would_run_no_step_is_refused() -> None:
    raw = {"prompt": "a", "init_image": PNG_B64, "num_inference_steps": 4, "prompt_strength": 0.2}

    assert "prompt_strength: with 4 steps it must be at least 0.25 (got 0.2)" in problems(raw, "sd")
    assert parse_family_input({**raw, "prompt_strength": 0.25}, spec("sd")).prompt_strength == 0.25
