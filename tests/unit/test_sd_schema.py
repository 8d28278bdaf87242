"""The Stable Diffusion input schema: defaults, limits, aliases, and one readable error line.

Pure: nothing here imports torch or diffusers (one test checks that in a fresh interpreter).
Strict types, unknown fields and messages are in test_sd_schema_messages.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adapters.stable_diffusion.limits import SdLimits
from adapters.stable_diffusion.schedulers import SCHEDULER_NAMES, canonical_scheduler
from tests.support.sd_schema_kit import parse_sd, problems

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_prompt_alone_gets_the_documented_defaults() -> None:
    parsed = parse_sd({"prompt": "a cat"})

    assert parsed.model_dump(exclude_defaults=False) == {
        "prompt": "a cat",
        "negative_prompt": None,
        "width": 512,
        "height": 512,
        "num_outputs": 1,
        "num_inference_steps": 25,
        "guidance_scale": 7.5,
        "scheduler": "DDIM",
        "seed": None,
        "init_image": None,
        "mask": None,
        "prompt_strength": None,
        "use_refiner": False,
        "refiner_inference_steps": None,
        "high_noise_frac": None,
        "loras": [],
        "lora": None,
        "lora_scale": None,
    }


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
    assert parse_sd({"prompt": "a", "num_images": 3}).num_outputs == 3


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
    assert parse_sd({"prompt": "a", "scheduler": sent}).scheduler == canonical


def test_every_canonical_scheduler_name_resolves_to_itself() -> None:
    assert all(canonical_scheduler(name) == name for name in SCHEDULER_NAMES)


def test_limits_come_from_sd_limits() -> None:
    limits = SdLimits(max_pixels=512 * 512, max_outputs=8, max_steps=50)

    assert parse_sd({"prompt": "a", "num_outputs": 8, "num_inference_steps": 50}, limits)
    assert problems(
        {"prompt": "a", "num_outputs": 9, "num_inference_steps": 51, "width": 520}, limits
    ) == (
        "invalid input: width x height: 520x512 is 266240 pixels, more than the limit of 262144; "
        "num_outputs: must be at most 8 (got 9); num_inference_steps: must be at most 50 (got 51)"
    )


def test_the_pixel_cap_applies_whichever_side_was_given() -> None:
    assert parse_sd({"prompt": "a", "width": 1024, "height": 1024}).width == 1024
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


def test_importing_the_adapter_does_not_import_torch_or_diffusers() -> None:
    code = (
        "import sys\n"
        "import adapters.stable_diffusion\n"
        "import adapters.stable_diffusion.model, adapters.stable_diffusion.schema\n"
        "import adapters.stable_diffusion.tiny, adapters.stable_diffusion.output_images\n"
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


