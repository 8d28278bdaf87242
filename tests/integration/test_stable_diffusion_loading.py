"""Loading the Stable Diffusion adapter, and the tiny offline pipeline it is tested with.

The CUDA fast-path changes apply on any device; running before load, load failures, an unknown
device and CUDA asked for without one are model errors that say what is wrong; ``make_tiny_model``
reuses, refuses to overwrite, and builds the same small files every time. Jobs run through the
loaded adapter are in test_stable_diffusion_model.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.stable_diffusion.model import StableDiffusionModel
from adapters.stable_diffusion.tiny import make_tiny_model
from domain.errors import ModelError
from tests.support.sd_model_kit import SMALL, RecordingContext, decode, run

torch = pytest.importorskip("torch")
pytest.importorskip("PIL.Image")
pytest.importorskip("numpy")


def test_the_cuda_fast_path_changes_apply_cleanly_on_any_device(tiny_sd_path: Path) -> None:
    """The GPU tests check them on CUDA; this keeps them working where no GPU is (CI)."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from adapters.stable_diffusion.acceleration import speed_up

    fresh = StableDiffusionModel(str(tiny_sd_path), device="cpu")
    fresh.load()
    pipe = fresh.pipeline
    pipe.unet.set_attn_processor(AttnProcessor())  # as if an older default had been loaded

    speed_up(torch, pipe, channels_last=True, fuse_qkv=False)

    for module in (pipe.unet, pipe.vae):
        assert all(isinstance(p, AttnProcessor2_0) for p in module.attn_processors.values())
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert decode(run(fresh, seed=1)[0]["image"]).size == (64, 64)


def test_running_before_load_is_a_model_error(tiny_sd_path: Path) -> None:
    with pytest.raises(ModelError, match="not loaded"):
        StableDiffusionModel(str(tiny_sd_path)).run(SMALL, RecordingContext())


@pytest.mark.parametrize(
    ("make_path", "message"),
    [
        (lambda tmp: str(tmp / "no-such-folder"), "model folder '.*no-such-folder' not found"),
        (lambda tmp: str(tmp), "is not a diffusers pipeline \\(no model_index.json\\)"),
        (lambda tmp: None, "no model path"),
        (lambda tmp: "nobody/not-a-cached-model", "downloads are off"),
    ],
    ids=["missing folder", "not a pipeline", "no path", "uncached hub id"],
)
def test_load_failures_are_model_errors_that_say_what_is_wrong(
    tmp_path: Path, make_path: Callable[[Path], str | None], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        StableDiffusionModel(make_path(tmp_path), device="cpu").load()


def test_an_unknown_device_is_a_model_error(tiny_sd_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown device 'tpu'"):
        StableDiffusionModel(str(tiny_sd_path), device="tpu").load()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_asking_for_cuda_without_one_is_a_model_error(tiny_sd_path: Path) -> None:
    with pytest.raises(ModelError, match="no CUDA device"):
        StableDiffusionModel(str(tiny_sd_path), device="cuda").load()


def test_make_tiny_model_returns_an_existing_pipeline_untouched(tiny_sd_path: Path) -> None:
    index = tiny_sd_path / "model_index.json"
    before = index.stat().st_mtime_ns

    assert make_tiny_model(tiny_sd_path) == tiny_sd_path
    assert index.stat().st_mtime_ns == before


def test_make_tiny_model_never_overwrites_a_folder_of_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")

    with pytest.raises(FileExistsError, match="not empty"):
        make_tiny_model(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_make_tiny_model_builds_the_same_small_files_every_time(
    tiny_sd_path: Path, tmp_path: Path
) -> None:
    rebuilt = make_tiny_model(tmp_path / "again")

    files = sorted(p.relative_to(tiny_sd_path) for p in tiny_sd_path.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(rebuilt) for p in rebuilt.rglob("*") if p.is_file())
    for name in files:
        assert (rebuilt / name).read_bytes() == (tiny_sd_path / name).read_bytes(), name
    assert sum((tiny_sd_path / f).stat().st_size for f in files) < 8_500_000
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # no staging folder left behind
