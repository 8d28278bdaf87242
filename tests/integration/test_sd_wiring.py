"""The composition root's Stable Diffusion wiring: family, limits and input images from settings.

``build_stable_diffusion`` reads the family from the weights (or ``SD_PIPELINE``; Flux schnell
from the weights either way, unless ``SD_PIPELINE=flux-schnell`` forces it), refuses
``SD_MAX_*`` settings below the family's defaults at start, and gives the model an image loader
under ``INPUT_IMAGE_MAX_*`` that fetches URLs only with ``INPUT_URL_FETCH``, through the
SSRF-safe fetcher: a loopback image server is refused by default and reached only when
``INPUT_URL_ALLOW_PRIVATE`` allows it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.http.safe_fetch import SafeFetcher
from adapters.stable_diffusion.families import FLUX_SCHNELL, SPECS, Family
from adapters.stable_diffusion.model import StableDiffusionModel
from app.sd_wiring import build_stable_diffusion
from app.settings import load_settings
from domain.errors import ConfigurationError, InvalidInput
from tests.support.image_server import ImageServer, Route
from tests.support.sd_jobs import StepContext, decode, noise_image

pytest.importorskip("torch")


def build(path: Path, **settings: Any) -> StableDiffusionModel:
    loaded = load_settings(env_file=None, MODEL_PATH=str(path),
                           WEBHOOK_GET_WORK="http://api.invalid/take", **settings)
    model = build_stable_diffusion(loaded)
    assert isinstance(model, StableDiffusionModel)
    return model


@pytest.fixture(scope="module")
def image_host() -> Iterator[ImageServer]:
    import io

    body = io.BytesIO()
    noise_image((64, 64)).save(body, "PNG")
    with ImageServer({"/cat.png": Route(body=body.getvalue(),
                                        headers={"Content-Type": "image/png"})}) as server:
        yield server


def test_the_family_comes_from_the_weights_and_sd_pipeline_forces_one(
    tiny_family_path: Callable[[str], Path],
) -> None:
    assert build(tiny_family_path("sdxl")).spec.family == "sdxl"  # type: ignore[union-attr]
    forced = build(tiny_family_path("sdxl"), SD_PIPELINE="sd")
    assert forced.spec is not None and forced.spec.family == "sd"


def test_flux_schnell_is_read_from_the_weights_whether_or_not_sd_pipeline_forces_flux(
    tiny_family_path: Callable[[str], Path],
) -> None:
    schnell = tiny_family_path("flux-schnell")

    assert build(schnell).spec == FLUX_SCHNELL
    assert build(schnell, SD_PIPELINE="flux").spec == FLUX_SCHNELL
    assert build(tiny_family_path("flux"), SD_PIPELINE="flux").spec == SPECS[Family.FLUX]


def test_sd_pipeline_flux_schnell_forces_schnell_on_flux_dev_weights(
    tiny_family_path: Callable[[str], Path],
) -> None:
    assert build(tiny_family_path("flux"), SD_PIPELINE="flux-schnell").spec == FLUX_SCHNELL


def test_limits_below_the_familys_defaults_are_refused_at_start(
    tiny_family_path: Callable[[str], Path],
) -> None:
    with pytest.raises(ConfigurationError, match="SD_MAX_PIXELS must be at least 1048576"):
        build(tiny_family_path("flux"), SD_MAX_PIXELS=768 * 768)
    assert build(tiny_family_path("sd"), SD_MAX_PIXELS=768 * 768).spec is not None
    with pytest.raises(ConfigurationError, match="SD_SIZES: 1024x520: Flux sides are multiples"):
        build(tiny_family_path("flux"), SD_SIZES="1024x1024,1024x520")


def test_the_image_settings_reach_the_loader_and_its_fetcher(tiny_sd_path: Path) -> None:
    plain = build(tiny_sd_path, INPUT_IMAGE_MAX_BYTES=1234, INPUT_IMAGE_MAX_PIXELS=5678)
    assert (plain.images.limits.max_bytes, plain.images.limits.max_pixels) == (1234, 5678)
    assert plain.images.fetcher is None and plain.fetch_urls is False

    fetching = build(tiny_sd_path, INPUT_URL_FETCH=True, INPUT_URL_TIMEOUT=2500)
    assert fetching.fetch_urls is True
    assert isinstance(fetching.images.fetcher, SafeFetcher)
    assert fetching.images.fetcher.policy.deadline_s == 2.5
    assert fetching.images.fetcher.policy.allow_private is False


def test_with_url_fetching_on_a_loopback_image_is_still_refused_and_never_requested(
    tiny_sd_path: Path, image_host: ImageServer
) -> None:
    model = build(tiny_sd_path, INPUT_URL_FETCH=True)
    model.load()
    before = len(image_host.requests)

    with pytest.raises(InvalidInput, match="init_image: could not be fetched"):
        model.run({"prompt": "a cat", "init_image": image_host.url("/cat.png"),
                   "num_inference_steps": 2}, StepContext())
    assert len(image_host.requests) == before


def test_with_private_addresses_allowed_an_init_image_url_is_fetched_and_used(
    tiny_sd_path: Path, image_host: ImageServer
) -> None:
    model = build(tiny_sd_path, INPUT_URL_FETCH=True, INPUT_URL_ALLOW_PRIVATE=True)
    model.load()

    result = model.run({"prompt": "a cat", "init_image": image_host.url("/cat.png"),
                        "num_inference_steps": 2, "seed": 1}, StepContext())

    assert [path for path, _ in image_host.requests][-1] == "/cat.png"
    with decode(result[0]["image"]) as image:
        assert image.size == (64, 64)
