"""The opt-in lossy speed-up: diffusers' first-block cache on Flux's transformer, only when
``SD_FIRST_BLOCK_CACHE`` asks for it; a UNet family ignores it with a warning."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.stable_diffusion.model import StableDiffusionModel
from tests.support.sd_jobs import StepContext

pytest.importorskip("torch")

JOB = {"prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 3, "seed": 5}


@pytest.mark.timeout(600)
def test_flux_gets_the_first_block_cache_only_when_asked(
    tiny_family_path: Callable[[str], Path],
) -> None:
    plain = StableDiffusionModel(str(tiny_family_path("flux-schnell")), device="cpu")
    cached = StableDiffusionModel(str(tiny_family_path("flux-schnell")), device="cpu",
                                  first_block_cache=0.5)
    plain.load()
    cached.load()

    assert not plain.pipeline.transformer.is_cache_enabled
    assert cached.pipeline.transformer.is_cache_enabled
    assert len(cached.run(JOB, StepContext())) == 1


def test_a_unet_family_ignores_it_with_a_warning(
    tiny_sd_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = StableDiffusionModel(str(tiny_sd_path), device="cpu", first_block_cache=0.2)

    with caplog.at_level(logging.WARNING, logger="podworker.model"):
        model.load()

    events = [getattr(r, "event", None) for r in caplog.records]
    assert "first_block_cache_unavailable" in events
    assert len(model.run(JOB, StepContext())) == 1
