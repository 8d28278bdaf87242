"""The Stable Diffusion input schema's strict types, unknown fields and one readable error line.

Booleans, strings and fractions do not pass as numbers; ``null`` means the default; unknown and
unsupported fields are named; messages stay short and show user text literally; any JSON object
is accepted or refused with one clean line. Pure: no torch, no diffusers.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.stable_diffusion.limits import UNSUPPORTED_FIELDS, SdLimits
from domain.errors import InvalidInput
from tests.support.sd_schema_kit import FIELD_NAMES, parse_sd, problems


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
    assert parse_sd({"prompt": "a", "width": 640.0}).width == 640
    assert problems({"prompt": "a", "num_inference_steps": 2.5}) == (
        "invalid input: num_inference_steps: must be an integer (got 2.5)"
    )


def test_null_means_the_default() -> None:
    parsed = parse_sd(
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
    assert parse_sd({"prompt": "a", "guidance_scale": 7}).guidance_scale == 7.0


def test_seed_covers_32_bits() -> None:
    assert parse_sd({"prompt": "a", "seed": 2**32 - 1}).seed == 2**32 - 1
    assert problems({"prompt": "a", "seed": 2**32}) == (
        "invalid input: seed: must be at most 4294967295 (got 4294967296)"
    )


def test_an_unknown_field_is_refused_with_a_suggestion_and_the_known_fields() -> None:
    message = problems({"prompt": "a", "num_inference_step": 30, "colour": "red"})

    assert message == (
        "invalid input: num_inference_step: unknown field (did you mean num_inference_steps?); "
        f"colour: unknown field; known fields: {', '.join(FIELD_NAMES)}"
    )


@pytest.mark.parametrize("field", sorted(UNSUPPORTED_FIELDS))
def test_template_fields_this_worker_lacks_are_called_unsupported(field: str) -> None:
    assert problems({"prompt": "a", field: "x"}) == (
        f"invalid input: {field}: not supported by this worker"
    )


def test_a_message_stays_short_for_an_input_full_of_junk() -> None:
    message = problems({"prompt": "a", **{f"junk{i}": i for i in range(500)}})

    assert "and 488 more" in message
    assert len(message) < 1000


def test_user_text_with_braces_is_shown_literally() -> None:
    assert "unknown '{x}'" in problems({"prompt": "a", "scheduler": "{x}"})


def test_an_input_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidInput, match="must be a JSON object"):
        parse_sd(["a"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_outputs": 0},
        {"max_steps": True},
        {"max_prompt_chars": -1},
    ],
)
def test_sd_limits_refuse_values_that_are_not_positive_integers(kwargs: dict[str, Any]) -> None:
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
        parsed = parse_sd(raw)
    except InvalidInput as exc:
        message = str(exc)
        assert message.startswith("invalid input: ")
        assert "\n" not in message
        assert "pydantic" not in _without_input_text(message, raw)
        assert "http" not in _without_input_text(message, raw)  # no docs URL of pydantic's
    else:
        assert parsed.prompt.strip()
        if parsed.width is not None and parsed.height is not None:  # else the image's size
            assert parsed.width * parsed.height <= SdLimits().max_pixels


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
