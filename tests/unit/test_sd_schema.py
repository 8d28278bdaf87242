"""The Stable Diffusion input schema: defaults, limits, aliases, and one readable error line.

Pure: nothing here imports torch or diffusers (one test checks that in a fresh interpreter).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.stable_diffusion.schedulers import SCHEDULER_NAMES, canonical_scheduler
from adapters.stable_diffusion.schema import FIELD_NAMES, SdInput, SdLimits, parse_input
from domain.errors import InvalidInput

REPO_ROOT = Path(__file__).resolve().parents[2]


def problems(raw: dict[str, Any], limits: SdLimits | None = None) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_input(raw, limits)
    return str(caught.value)


def test_a_prompt_alone_gets_the_documented_defaults() -> None:
    parsed = parse_input({"prompt": "a cat"})

    assert parsed == SdInput.model_validate(
        {
            "prompt": "a cat",
            "negative_prompt": None,
            "width": 512,
            "height": 512,
            "num_outputs": 1,
            "num_inference_steps": 25,
            "guidance_scale": 7.5,
            "scheduler": "DDIM",
            "seed": None,
        }
    )


def test_three_bad_fields_are_named_in_one_message() -> None:
    message = problems({"prompt": "a cat", "width": 100, "num_outputs": 9, "scheduler": "FOO"})

    assert message == (
        "invalid input: width: must be a multiple of 8 (got 100); "
        "num_outputs: must be at most 4 (got 9); "
        f"scheduler: unknown 'FOO', allowed: {', '.join(SCHEDULER_NAMES)}"
    )


def test_a_missing_prompt_is_reported_with_the_other_problems() -> None:
    message = problems({"seed": -1})

    assert message == "invalid input: prompt: is required; seed: must be at least 0 (got -1)"


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_a_blank_prompt_is_refused(prompt: str) -> None:
    assert problems({"prompt": prompt}) == "invalid input: prompt: must not be empty"


def test_a_too_long_prompt_is_refused_without_echoing_it() -> None:
    message = problems(
        {"prompt": "x" * 51, "negative_prompt": "y" * 60}, SdLimits(max_prompt_chars=50)
    )

    assert message == (
        "invalid input: prompt: must be at most 50 characters (got 51); "
        "negative_prompt: must be at most 50 characters (got 60)"
    )
    assert "xxx" not in message


def test_num_images_is_accepted_as_an_alias_of_num_outputs() -> None:
    assert parse_input({"prompt": "a", "num_images": 3}).num_outputs == 3


def test_num_images_out_of_range_is_reported_under_the_name_that_was_sent() -> None:
    assert problems({"prompt": "a", "num_images": 0}) == (
        "invalid input: num_images: must be at least 1 (got 0)"
    )


def test_num_outputs_and_num_images_together_are_refused() -> None:
    assert problems({"prompt": "a", "num_outputs": 2, "num_images": 3}) == (
        "invalid input: num_images: give num_outputs or num_images, not both"
    )


@pytest.mark.parametrize(
    ("sent", "canonical"),
    [
        ("K-LMS", "K-LMS"),
        ("KLMS", "K-LMS"),
        ("k_lms", "K-LMS"),
        ("EULER", "EULER"),
        ("K_EULER", "EULER"),
        ("EULER-A", "EULER-A"),
        ("K_EULER_ANCESTRAL", "EULER-A"),
        ("euler a", "EULER-A"),
        ("DDIM", "DDIM"),
        ("ddpm", "DDPM"),
        ("PNDM", "PNDM"),
        ("DPM++", "DPM++"),
        ("DPMSolverMultistep", "DPM++"),
        ("HEUN", "HEUN"),
        ("K_HEUN", "HEUN"),
    ],
)
def test_scheduler_aliases_resolve_to_their_canonical_name(sent: str, canonical: str) -> None:
    assert parse_input({"prompt": "a", "scheduler": sent}).scheduler == canonical


def test_every_canonical_scheduler_name_resolves_to_itself() -> None:
    assert all(canonical_scheduler(name) == name for name in SCHEDULER_NAMES)


def test_limits_come_from_sd_limits() -> None:
    limits = SdLimits(max_pixels=512 * 512, max_outputs=8, max_steps=50)

    assert parse_input({"prompt": "a", "num_outputs": 8, "num_inference_steps": 50}, limits)
    assert problems(
        {"prompt": "a", "num_outputs": 9, "num_inference_steps": 51, "width": 520}, limits
    ) == (
        "invalid input: width x height: 520x512 is 266240 pixels, more than the limit of 262144; "
        "num_outputs: must be at most 8 (got 9); num_inference_steps: must be at most 50 (got 51)"
    )


def test_the_pixel_cap_applies_whichever_side_was_given() -> None:
    assert parse_input({"prompt": "a", "width": 1024, "height": 1024}).width == 1024
    assert "2056x512 is 1052672 pixels" in problems({"prompt": "a", "width": 2056})
    assert "512x2056 is 1052672 pixels" in problems({"prompt": "a", "height": 2056})


@pytest.mark.parametrize(
    ("width", "message"),
    [
        (56, "width: must be at least 64 (got 56)"),
        (100, "width: must be a multiple of 8 (got 100)"),
        (10**9, "width: must be at most 16384 (got 1000000000)"),
    ],
)
def test_sides_must_be_multiples_of_8_within_bounds(width: int, message: str) -> None:
    assert problems({"prompt": "a", "width": width}) == f"invalid input: {message}"


@pytest.mark.parametrize("field", ["width", "height", "num_outputs", "num_inference_steps", "seed"])
def test_booleans_do_not_pass_as_integers(field: str) -> None:
    assert problems({"prompt": "a", field: True}) == (
        f"invalid input: {field}: must be an integer (got true)"
    )


def test_booleans_do_not_pass_as_numbers() -> None:
    assert problems({"prompt": "a", "guidance_scale": False}) == (
        "invalid input: guidance_scale: must be a number (got false)"
    )


def test_wrong_types_get_plain_messages() -> None:
    message = problems(
        {"prompt": ["a"], "width": "abc", "height": "512", "guidance_scale": {}, "scheduler": 3}
    )

    assert message == (
        "invalid input: prompt: must be a string (got an array); "
        "width: must be an integer (got 'abc'); "
        "height: must be an integer (got '512'); "
        "guidance_scale: must be a number (got an object); "
        "scheduler: must be a string (got 3)"
    )


def test_a_whole_float_is_accepted_as_an_integer_and_a_fraction_is_not() -> None:
    assert parse_input({"prompt": "a", "width": 640.0}).width == 640
    assert problems({"prompt": "a", "num_inference_steps": 2.5}) == (
        "invalid input: num_inference_steps: must be an integer (got 2.5)"
    )


def test_null_means_the_default() -> None:
    parsed = parse_input(
        {"prompt": "a", "width": None, "num_outputs": None, "scheduler": None, "seed": None}
    )

    assert (parsed.width, parsed.num_outputs, parsed.scheduler, parsed.seed) == (
        512,
        1,
        "DDIM",
        None,
    )


@pytest.mark.parametrize("scale", [-0.5, 20.5, math.nan, math.inf])
def test_guidance_scale_must_be_a_finite_number_from_0_to_20(scale: float) -> None:
    assert problems({"prompt": "a", "guidance_scale": scale}).startswith(
        "invalid input: guidance_scale: must be between 0 and 20"
    )


def test_guidance_scale_accepts_an_integer() -> None:
    assert parse_input({"prompt": "a", "guidance_scale": 7}).guidance_scale == 7.0


def test_seed_covers_32_bits() -> None:
    assert parse_input({"prompt": "a", "seed": 2**32 - 1}).seed == 2**32 - 1
    assert problems({"prompt": "a", "seed": 2**32}) == (
        "invalid input: seed: must be at most 4294967295 (got 4294967296)"
    )


def test_an_unknown_field_is_refused_with_a_suggestion_and_the_known_fields() -> None:
    message = problems({"prompt": "a", "num_inference_step": 30, "colour": "red"})

    assert message == (
        "invalid input: num_inference_step: unknown field (did you mean num_inference_steps?); "
        f"colour: unknown field; known fields: {', '.join(FIELD_NAMES)}"
    )


@pytest.mark.parametrize("field", ["init_image", "mask", "prompt_strength", "lora"])
def test_template_fields_this_worker_lacks_are_called_unsupported(field: str) -> None:
    assert problems({"prompt": "a", field: "x"}) == (
        f"invalid input: {field}: not supported by this worker "
        "(it generates images from a text prompt only)"
    )


def test_a_message_stays_short_for_an_input_full_of_junk() -> None:
    message = problems({"prompt": "a", **{f"junk{i}": i for i in range(500)}})

    assert "and 488 more" in message
    assert len(message) < 1000


def test_user_text_with_braces_is_shown_literally() -> None:
    assert "unknown '{x}'" in problems({"prompt": "a", "scheduler": "{x}"})


def test_an_input_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidInput, match="must be a JSON object"):
        parse_input(["a"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_outputs": 0},
        {"max_steps": True},
        {"max_prompt_chars": -1},
        {"max_pixels": 256 * 256},  # below the default 512x512
        {"max_steps": 20},  # below the default 25 steps
    ],
)
def test_sd_limits_refuse_values_that_would_refuse_every_job(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="SdLimits"):
        SdLimits(**kwargs)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=5,
)


@given(
    st.dictionaries(
        st.sampled_from([*FIELD_NAMES, "init_image", "extra"]) | st.text(max_size=8),
        _json_values,
        max_size=8,
    )
)
def test_any_json_object_is_either_accepted_or_refused_with_one_clean_line(
    raw: dict[str, Any],
) -> None:
    try:
        parsed = parse_input(raw)
    except InvalidInput as exc:
        message = str(exc)
        assert message.startswith("invalid input: ")
        assert "\n" not in message
        assert "pydantic" not in _without_input_text(message, raw)
        assert "http" not in _without_input_text(message, raw)  # no docs URL of pydantic's
    else:
        assert parsed.prompt.strip()
        assert parsed.width * parsed.height <= SdLimits().max_pixels


def test_importing_the_adapter_does_not_import_torch_or_diffusers() -> None:
    code = (
        "import sys\n"
        "import adapters.stable_diffusion\n"
        "import adapters.stable_diffusion.model, adapters.stable_diffusion.schema\n"
        "import adapters.stable_diffusion.tiny, adapters.stable_diffusion.images\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'PIL', 'numpy')\n"
        "               if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert done.stdout.strip() == ""


def _without_input_text(message: str, raw: Any) -> str:
    """``message`` less every key and string of ``raw`` it may quote (hypothesis may name a
    field ``http``): what is left is the message's own words."""
    texts: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                collect(key)
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    collect(raw)
    for text in sorted((t for t in texts if t), key=len, reverse=True):
        message = message.replace(text, "").replace(repr(text), "")
    return message
