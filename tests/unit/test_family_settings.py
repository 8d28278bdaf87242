"""The settings for pipeline families and input images: read, checked, one line when bad."""

from __future__ import annotations

import pytest

from app.model_settings import PipelineFamily
from app.settings import load_settings
from domain.errors import ConfigurationError


def test_the_family_and_image_settings_are_read_and_checked() -> None:
    settings = load_settings(env_file=None, SD_PIPELINE="flux", INPUT_URL_FETCH="true")
    assert settings.SD_PIPELINE.value == "flux" and settings.INPUT_URL_FETCH is True
    assert settings.INPUT_URL_ALLOW_PRIVATE is False

    with pytest.raises(ConfigurationError, match="invalid setting SD_PIPELINE"):
        load_settings(env_file=None, SD_PIPELINE="sd4")
    with pytest.raises(ConfigurationError, match="invalid setting INPUT_URL_TIMEOUT"):
        load_settings(env_file=None, INPUT_URL_TIMEOUT=0)


def test_sd_pipeline_offers_auto_and_exactly_the_families_with_a_spec_and_a_tiny_pipeline() -> None:
    from adapters.stable_diffusion.families import BY_NAME, FLUX_SCHNELL
    from adapters.stable_diffusion.tiny import FAMILIES

    offered = [family.value for family in PipelineFamily]

    pipelines = [name for name in FAMILIES if name != "sdxl-refiner"]  # a refiner is no base
    assert offered == ["auto", *BY_NAME] == ["auto", *pipelines]
    settings = load_settings(env_file=None, SD_PIPELINE="flux-schnell")
    assert BY_NAME[settings.SD_PIPELINE.value] == FLUX_SCHNELL
