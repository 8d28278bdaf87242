"""Fuzzed inputs against every family's schema (``parse_family_input``), the one jobs now meet.

Each family gets generated inputs (tests/support/fuzz_kit.py's, with image fields added: junk,
base64-like text, data URLs and http(s) URLs). Each is either accepted within the limits and
the family's rules (sides a multiple of 8, or 16 for Flux; no negative prompt for Flux; no
scheduler for SD3 and Flux; no URL image while fetching is off) or refused in one line that
echoes no long value.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.stable_diffusion.families import family_spec
from adapters.stable_diffusion.input_images import reference_kind
from adapters.stable_diffusion.schema import parse_family_input
from domain.errors import InvalidInput
from tests.support.fuzz_kit import CASES, FUZZ_LIMITS, fuzz_settings, sd_inputs

EXAMPLES = 750

image_references = st.one_of(
    st.sampled_from(["http://127.0.0.1/cat.png", "https://169.254.169.254/latest/meta-data",
                     "HTTP://example.com/a.png", "data:image/png;base64,iVBORw0KGgo=",
                     "data:text/html,<b>", "iVBORw0KGgoAAAANSUhEUg==", ""]),
    st.text(max_size=60), st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2),
)


@st.composite
def family_inputs(draw: st.DrawFn) -> dict[str, Any]:
    raw = draw(sd_inputs())
    for field in ("init_image", "mask"):
        if draw(st.booleans()):
            raw[field] = draw(image_references)
    if draw(st.integers(0, 3)) == 0:
        raw["prompt_strength"] = draw(st.one_of(st.floats(allow_nan=True), st.integers(-2, 2)))
    return raw


@pytest.mark.parametrize("name", ["sd", "sdxl", "sd3", "flux"])
def test_every_fuzzed_input_meets_the_familys_rules_or_is_refused_in_one_line(name: str) -> None:
    spec = family_spec(name)
    count = 0

    @fuzz_settings(EXAMPLES)
    @given(raw=family_inputs())
    def check(raw: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        try:
            params = parse_family_input(raw, spec, FUZZ_LIMITS)
        except InvalidInput as exc:
            message = str(exc)
            assert message.startswith("invalid input: ") and "\n" not in message
            assert "https://errors.pydantic.dev" not in message and len(message) <= 4000
            for value in raw.values():
                if isinstance(value, str) and len(value) > 40:
                    assert value not in message
            return
        assert params.prompt.strip() and len(params.prompt) <= FUZZ_LIMITS.max_prompt_chars
        if params.width is None or params.height is None:
            assert params.init_image is not None
        else:
            assert params.width % spec.side_multiple == 0 == params.height % spec.side_multiple
            assert params.width * params.height <= FUZZ_LIMITS.max_pixels
        assert 1 <= params.num_outputs <= FUZZ_LIMITS.max_outputs
        assert 1 <= params.num_inference_steps <= FUZZ_LIMITS.max_steps
        assert (params.scheduler is None) == (spec.default_scheduler is None)
        assert spec.negative_prompt or params.negative_prompt is None
        assert (params.prompt_strength is None) == (params.init_image is None)
        assert params.mask is None or params.init_image is not None
        for image in (params.init_image, params.mask):
            assert image is None or reference_kind(image) != "url", "a URL accepted"

    check()
    CASES[f"{spec.label} inputs (family schema)"] += count
    assert count >= EXAMPLES
