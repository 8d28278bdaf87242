"""What keeps a compiled pipeline serving on a GPU, shown on the CPU with the tiny pipeline.

- img2img's latents come from a channels-last VAE on CUDA; the compiled UNet still serves them
  (no recompile, no silent eager run);
- an error that reads like a dead GPU (a CUDA-graph capture error) while the device still
  answers turns compiling off and the job runs eagerly, instead of ``DeviceLost`` (exit 6, and
  the restarted pod failing the same way);
- a start that lost its GPU while compiling leaves a marker, and the next start runs uncompiled;
- two compilations in one process each keep Inductor's files in their own folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from adapters.stable_diffusion import acceleration, device_setup
from adapters.stable_diffusion.acceleration import Compilation, CompileOptions
from adapters.stable_diffusion.compile_cache import MARKER_NAME
from adapters.stable_diffusion.limits import SdLimits
from adapters.stable_diffusion.model import StableDiffusionModel
from domain.errors import DeviceLost
from domain.execution import DetachedContext
from tests.support.sd_jobs import data_url, noise_image

torch = pytest.importorskip("torch")
counters = pytest.importorskip("torch._dynamo.utils").counters

pytestmark = pytest.mark.usefixtures("fresh_dynamo")  # dynamo's caches are process-wide

QUIET = DetachedContext("compile-safety")
ONE = SdLimits(max_outputs=1)
CAPTURE_ERROR = "CUDA error: operation not permitted when stream is capturing"




def job(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 4,
            "seed": 3, **fields}


def capture_failing_backend(graph: Any, example_inputs: Any) -> Any:
    """Compiles, then fails when run, as a CUDA graph capture does."""

    def run(*args: Any) -> Any:
        raise torch.AcceleratorError(CAPTURE_ERROR)

    return run


@pytest.mark.timeout(600)
def test_img2img_from_a_channels_last_vae_runs_the_compiled_unet_without_recompiling(
    tiny_sd_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On CUDA the VAE is channels-last, so img2img's latents are too: do the same on the CPU.
    place = device_setup.place_and_speed_up

    def channels_last_vae(*args: Any, **kwargs: Any) -> Any:
        pipe, setup = place(*args, **kwargs)
        pipe.vae.to(memory_format=torch.channels_last)
        return pipe, setup

    monkeypatch.setattr("adapters.stable_diffusion.model.place_and_speed_up", channels_last_vae)
    monkeypatch.setattr(acceleration, "JOB_STANCE", "fail_on_recompile")
    model = StableDiffusionModel(str(tiny_sd_path), device="cpu", limits=ONE, sizes=[(64, 64)],
                                 compile=CompileOptions(backend="eager"))
    model.load()
    warmed = int(counters["stats"]["unique_graphs"])

    output = model.run(job(init_image=data_url(noise_image((64, 64))), prompt_strength=0.8),
                       QUIET)

    assert output[0]["image"].data.startswith(b"\x89PNG")
    assert int(counters["stats"]["unique_graphs"]) == warmed
    assert model.compilation is not None and model.compilation.active


@pytest.mark.timeout(600)
def test_a_capture_error_on_a_device_that_still_answers_falls_back_to_eager_not_device_lost(
    tiny_sd_path: Path,
) -> None:
    model = StableDiffusionModel(str(tiny_sd_path), device="cpu", limits=ONE, sizes=[(64, 64)],
                                 compile=CompileOptions(backend=capture_failing_backend))

    model.load()
    output = model.run(job(), QUIET)

    assert output[0]["image"].data.startswith(b"\x89PNG")
    assert model.compilation is not None and not model.compilation.active
    assert "stream is capturing" in (model.compilation.failure or "")


@pytest.mark.timeout(600)
def test_a_start_that_lost_its_gpu_while_compiling_makes_the_next_start_run_uncompiled(
    tiny_sd_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    monkeypatch.setattr(acceleration, "device_alive", lambda torch, device: False)
    crashing = StableDiffusionModel(
        str(tiny_sd_path), device="cpu", limits=ONE, sizes=[(64, 64)],
        compile=CompileOptions(backend=capture_failing_backend, state_dir=state))
    with pytest.raises(DeviceLost, match="warm-up failed"):
        crashing.load()
    assert (state / MARKER_NAME).is_file()

    monkeypatch.undo()
    counters.clear()
    restarted = StableDiffusionModel(
        str(tiny_sd_path), device="cpu", limits=ONE, sizes=[(64, 64)],
        compile=CompileOptions(backend="eager", state_dir=state))
    restarted.load()
    output = restarted.run(job(), QUIET)

    assert output[0]["image"].data.startswith(b"\x89PNG")
    assert restarted.compilation is not None and not restarted.compilation.active
    assert "died while compiling" in (restarted.compilation.failure or "")
    assert int(counters["stats"]["unique_graphs"]) == 0


@pytest.mark.timeout(600)
def test_a_warm_up_that_finishes_leaves_no_marker(tiny_sd_path: Path, tmp_path: Path) -> None:
    model = StableDiffusionModel(
        str(tiny_sd_path), device="cpu", limits=ONE, sizes=[(64, 64)],
        compile=CompileOptions(backend="eager", state_dir=tmp_path))

    model.load()

    assert model.compilation is not None and model.compilation.active
    assert not (tmp_path / MARKER_NAME).exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_compilations_in_one_process_keep_inductors_files_in_their_own_folders(
    tmp_path: Path,
) -> None:
    before = {name: os.environ.get(name) for name in ("TORCHINDUCTOR_CACHE_DIR",
                                                       "TRITON_CACHE_DIR")}
    folders = [tmp_path / "first", tmp_path / "second"]
    for folder in folders:
        torch._dynamo.reset()  # as between two models: dynamo forgets, Inductor's files stay
        pipe = SimpleNamespace(unet=torch.nn.Conv2d(4, 4, 3, padding=1))
        compilation = Compilation(torch, pipe, CompileOptions(cache_dir=folder), graphs=1)
        with compilation.warming():
            pipe.unet(torch.randn(1, 4, 8, 8))
        assert compilation.active, compilation.failure

    for folder in folders:
        written = [p for p in (folder / "inductor").rglob("*") if p.is_file()]
        assert written, f"Inductor wrote nothing under {folder}"
        assert list(folder.glob("artifacts-*.bin")), f"no portable artifacts in {folder}"
    assert {name: os.environ.get(name) for name in before} == before
