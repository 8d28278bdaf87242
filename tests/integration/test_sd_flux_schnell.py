"""Flux schnell through the real adapter: its own defaults, on a tiny schnell pipeline.

The tiny pipeline (``make_tiny_model(..., family="flux-schnell")``, tests/support/tiny_sd.py) is
a ``FluxPipeline`` whose transformer embeds no guidance, as FLUX.1-schnell's. The model reads
that from the weights and gives a job that leaves the steps and the guidance out schnell's
defaults: 4 steps and guidance 0.0. A guidance a job sends is accepted and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from adapters.stable_diffusion.families import FLUX_SCHNELL
from adapters.stable_diffusion.model import StableDiffusionModel
from tests.support.sd_jobs import StepContext, decode

pytest.importorskip("torch")
pytest.importorskip("diffusers")

SMALL: dict[str, Any] = {"prompt": "a lighthouse on a cliff", "width": 64, "height": 64}


@pytest.fixture
def model(tiny_family_model: Callable[[str], StableDiffusionModel]) -> StableDiffusionModel:
    return tiny_family_model("flux-schnell")


def pngs(result: Any) -> list[bytes]:
    return [bytes(item["image"].data) for item in result]


def test_the_model_reads_flux_schnell_from_the_weights(model: StableDiffusionModel) -> None:
    assert model.spec == FLUX_SCHNELL
    assert model.pipeline.transformer.config.guidance_embeds is False


def test_a_job_with_only_a_prompt_runs_schnells_four_steps_at_its_default_size(
    model: StableDiffusionModel,
) -> None:
    ctx = StepContext()

    result = model.run({"prompt": "a lighthouse on a cliff", "seed": 5}, ctx)

    assert ctx.updates == [{"step": k, "of": 4} for k in (1, 2, 3, 4)]
    with decode(result[0]["image"]) as image:
        assert (image.format, image.size) == ("PNG", (1024, 1024))


def test_schnells_defaults_give_byte_identical_pngs_for_a_seed_and_others_for_another(
    model: StableDiffusionModel,
) -> None:
    first = model.run({**SMALL, "seed": 7}, StepContext())
    again = model.run({**SMALL, "seed": 7}, StepContext())
    other = model.run({**SMALL, "seed": 8}, StepContext())

    assert pngs(first) == pngs(again)
    assert pngs(first) != pngs(other)


def test_a_guidance_scale_sent_to_schnell_is_accepted_and_changes_nothing(
    model: StableDiffusionModel,
) -> None:
    default = model.run({**SMALL, "seed": 3}, StepContext())
    ctx = StepContext()
    guided = model.run({**SMALL, "seed": 3, "guidance_scale": 7.5}, ctx)

    assert len(ctx.updates) == 4
    assert pngs(guided) == pngs(default)
