"""The Stable Diffusion settings added for the CUDA path: sizes, compile mode, PNG level, and
how they reach the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.sd_wiring import build_stable_diffusion
from app.settings import load_settings
from domain.errors import ConfigurationError


def test_sizes_are_read_as_width_by_height_pairs_without_repeats() -> None:
    loaded = load_settings(env_file=None, SD_SIZES=" 512x512, 768X512,512x512 ")

    assert loaded.SD_SIZES == "512x512,768x512"
    assert loaded.sd_sizes == ((512, 512), (768, 512))
    assert load_settings(env_file=None).sd_sizes == ()
    assert load_settings(env_file=None, SD_SIZES="  ").sd_sizes == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("512", "'512' is not WxH"),
        ("512x500", "multiples of 8"),
        ("32x512", "at least 64"),
        ("axb", "is not WxH"),
    ],
)
def test_a_bad_size_is_refused_naming_the_setting(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"invalid setting SD_SIZES.*{message}"):
        load_settings(env_file=None, SD_SIZES=value)


def test_an_unknown_compile_mode_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="invalid setting SD_COMPILE_MODE"):
        load_settings(env_file=None, SD_COMPILE_MODE="fast")


@pytest.mark.parametrize("name", ["sd", " stable_diffusion ", "sd "])
def test_the_model_is_decided_once_and_sd_batches_as_stable_diffusion_does(
    name: str, tmp_path: Path
) -> None:
    loaded = load_settings(env_file=None, MODEL=name, SD_BATCH_MAX=8,
                           MODEL_PATH=str(tmp_path), WEBHOOK_GET_WORK="http://api.invalid/take")

    assert loaded.MODEL == "stable_diffusion"
    assert loaded.slots == 8  # CONCURRENCY raised to SD_BATCH_MAX: a batch is the jobs at once
    model = build_stable_diffusion(loaded)
    assert model.device_queue.max_rows == 8  # type: ignore[attr-defined]


def test_an_unknown_model_name_is_refused_at_settings() -> None:
    with pytest.raises(ConfigurationError, match=r"invalid setting MODEL.*module:factory"):
        load_settings(env_file=None, MODEL="stable-diffusion")


def test_a_size_over_the_pixel_limit_is_refused_when_the_model_is_built(tmp_path: Path) -> None:
    loaded = load_settings(env_file=None, SD_SIZES="2048x2048", MODEL_PATH=str(tmp_path),
                           WEBHOOK_GET_WORK="http://api.invalid/take")

    with pytest.raises(ConfigurationError, match="SD_SIZES: 2048x2048 is more than SD_MAX_PIXELS"):
        build_stable_diffusion(loaded)


def test_an_unknown_compile_mode_and_a_png_level_out_of_range_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="SD_COMPILE_MODE"):
        load_settings(env_file=None, SD_COMPILE_MODE="fastest")
    with pytest.raises(ConfigurationError, match="SD_PNG_COMPRESSION"):
        load_settings(env_file=None, SD_PNG_COMPRESSION=10)


def test_the_settings_reach_the_model(tmp_path: Path) -> None:
    from adapters.stable_diffusion.model import StableDiffusionModel

    loaded = load_settings(
        env_file=None, MODEL_PATH=str(tmp_path), WEBHOOK_GET_WORK="http://api.invalid/take",
        SD_SIZES="512x512,640x384", MODEL_COMPILE=True, SD_COMPILE_MODE="reduce-overhead",
        SD_PNG_COMPRESSION=3, STATE_DIR=str(tmp_path / "state"),
    )

    model = build_stable_diffusion(loaded)

    assert isinstance(model, StableDiffusionModel)
    assert model.sizes == ((512, 512), (640, 384))
    assert model.png_compression == 3
    assert model.compile_options is not None
    assert model.compile_options.mode == "reduce-overhead"
    assert model.compile_options.cache_dir == tmp_path / "state" / "compile-cache"
    assert build_stable_diffusion(load_settings(
        env_file=None, MODEL_PATH=str(tmp_path), WEBHOOK_GET_WORK="http://api.invalid/take",
    )).compile_options is None  # type: ignore[attr-defined]
