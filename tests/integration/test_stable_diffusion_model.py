"""The Stable Diffusion adapter against the real diffusers code, with the tiny offline pipeline.

The pipeline is built once per session by ``make_tiny_model`` (tests/support/tiny_sd.py) and
loaded through the same ``from_pretrained`` path as real weights; every job here is 64x64 with a
few steps, so the module runs in seconds on a CPU. Load failures, the CUDA fast-path changes and
the tiny pipeline itself are in test_stable_diffusion_loading.py.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.clock import ManualClock
from adapters.stable_diffusion.model import StableDiffusionModel
from adapters.stable_diffusion.schedulers import SCHEDULER_NAMES, scheduler_class_name
from domain.errors import ExecutionTimeout, InvalidInput, JobCancelled, ModelError, OutOfMemory
from domain.execution import RunningJob
from domain.job import Artifact, Job
from domain.ports import Model
from tests.support.sd_model_kit import SMALL, RecordingContext, decode, run

torch = pytest.importorskip("torch")
PIL_Image = pytest.importorskip("PIL.Image")
np = pytest.importorskip("numpy")


@pytest.fixture
def model(tiny_sd_model: StableDiffusionModel) -> StableDiffusionModel:
    return tiny_sd_model


@pytest.fixture
def unet_calls(model: StableDiffusionModel) -> Iterator[list[int]]:
    """How many times the UNet ran (one call per denoising evaluation, batch included)."""
    calls: list[int] = []
    handle = model.pipeline.unet.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


def test_the_adapter_conforms_to_the_model_port(tiny_sd_path: Path) -> None:
    conforming: Model = StableDiffusionModel(str(tiny_sd_path))

    assert conforming.run is not None


def test_a_job_returns_one_png_artifact_of_the_requested_size_per_output(
    model: StableDiffusionModel,
) -> None:
    output = run(model, num_outputs=3, width=64, height=96, seed=41)

    assert [item["seed"] for item in output] == [41, 42, 43]
    for item in output:
        artifact = item["image"]
        assert isinstance(artifact, Artifact)
        assert (artifact.content_type, artifact.extension) == ("image/png", "png")
        image = decode(artifact)
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 96))


def test_the_same_seed_gives_byte_identical_pngs_and_another_seed_does_not(
    model: StableDiffusionModel,
) -> None:
    first = run(model, seed=1234, num_outputs=2)
    again = run(model, seed=1234, num_outputs=2)
    other = run(model, seed=1235, num_outputs=2)

    assert [i["image"].data for i in first] == [i["image"].data for i in again]
    assert first[0]["image"].data != first[1]["image"].data
    assert first[0]["image"].data != other[0]["image"].data
    # seed 1235 is also image 1 of the first job
    assert other[0]["seed"] == first[1]["seed"] == 1235


def test_image_i_of_a_job_is_reproduced_alone_with_seed_plus_i(model: StableDiffusionModel) -> None:
    batch = run(model, seed=500, num_outputs=3)
    alone = run(model, seed=502, num_outputs=1)
    unrelated = run(model, seed=9, num_outputs=1)

    pixels = [np.asarray(decode(i["image"]), dtype=int) for i in (batch[2], alone[0], unrelated[0])]
    # Batched and single convolutions may round differently: one level at most.
    assert np.abs(pixels[0] - pixels[1]).max() <= 1
    assert np.abs(pixels[0] - pixels[2]).mean() > 5


def test_a_job_without_a_seed_gets_a_random_one_and_reports_it(model: StableDiffusionModel) -> None:
    first = run(model, num_outputs=2)
    second = run(model, num_outputs=1)

    seeds = [item["seed"] for item in first]
    assert 0 <= seeds[0] < 2**32
    assert seeds[1] == (seeds[0] + 1) % 2**32
    assert second[0]["seed"] not in seeds
    assert run(model, seed=seeds[0], num_outputs=2)[0]["image"].data == first[0]["image"].data


def test_seeds_wrap_around_at_2_to_the_32(model: StableDiffusionModel) -> None:
    output = run(model, seed=2**32 - 1, num_outputs=2)

    assert [item["seed"] for item in output] == [2**32 - 1, 0]


def test_progress_is_reported_for_every_step_in_order(model: StableDiffusionModel) -> None:
    ctx = RecordingContext()

    run(model, ctx, num_inference_steps=5)

    assert ctx.updates == [{"step": s, "of": 5} for s in range(1, 6)]


def test_a_cancel_check_that_raises_stops_the_job_at_a_denoising_step(
    model: StableDiffusionModel, unet_calls: list[int]
) -> None:
    ctx = RecordingContext(stop_after_step=2)

    with pytest.raises(ExecutionTimeout):
        run(model, ctx, num_inference_steps=10)

    assert ctx.updates == [{"step": 1, "of": 10}, {"step": 2, "of": 10}]
    assert len(unet_calls) == 3  # the third step ran, then its check stopped the job
    assert len(unet_calls) < 10


def test_a_job_stop_propagates_unchanged(model: StableDiffusionModel) -> None:
    ctx = RecordingContext(stop_after_step=1, error=JobCancelled("job-stop request"))

    with pytest.raises(JobCancelled, match="job-stop request"):
        run(model, ctx, num_inference_steps=4)


def test_a_work_timeout_ends_the_job_at_a_step_and_the_next_job_runs_normally(
    model: StableDiffusionModel, unet_calls: list[int]
) -> None:
    clock = ManualClock(start=0.0)
    job = Job("job-slow", {}, taken_at=0.0)
    # Each step takes one second on this clock; the job may run for 2.5 s.
    running = RunningJob(
        job, started=0.0, timeout_s=2.5, clock=clock, on_progress=lambda _id, _u: clock.advance(1)
    )

    with pytest.raises(ExecutionTimeout, match="2500 ms"):
        model.run({**SMALL, "num_inference_steps": 20}, running)
    assert len(unet_calls) == 4

    ctx = RecordingContext()
    assert len(run(model, ctx, num_inference_steps=3, num_outputs=2)) == 2
    assert ctx.updates[-1] == {"step": 3, "of": 3}


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_whitelisted_scheduler_runs(model: StableDiffusionModel, name: str) -> None:
    if scheduler_class_name(name) == "LMSDiscreteScheduler":
        pytest.importorskip("scipy", reason="diffusers' K-LMS needs scipy")
    ctx = RecordingContext()

    output = run(model, ctx, scheduler=name.lower(), num_inference_steps=2, seed=3)

    assert type(model.pipeline.scheduler).__name__ == scheduler_class_name(name)
    assert decode(output[0]["image"]).size == (64, 64)
    assert ctx.updates == [{"step": 1, "of": 2}, {"step": 2, "of": 2}]


@pytest.mark.skipif(importlib.util.find_spec("scipy") is not None, reason="scipy is installed")
def test_a_scheduler_whose_dependency_is_missing_is_refused_with_the_alternatives(
    model: StableDiffusionModel,
) -> None:
    with pytest.raises(InvalidInput) as caught:
        run(model, scheduler="K-LMS")

    assert str(caught.value) == (
        "invalid input: scheduler: K-LMS is not available on this worker "
        "(LMSDiscreteScheduler needs scipy); available: DDIM, DDPM, DPM++, EULER, EULER-A, "
        "HEUN, PNDM"
    )


def test_schedulers_swap_back_and_forth_with_the_same_results(model: StableDiffusionModel) -> None:
    ddim = run(model, scheduler="DDIM", seed=77)
    run(model, scheduler="EULER-A", seed=77)

    assert run(model, scheduler="DDIM", seed=77)[0]["image"].data == ddim[0]["image"].data


def test_bad_input_is_refused_before_any_denoising(
    model: StableDiffusionModel, unet_calls: list[int]
) -> None:
    with pytest.raises(InvalidInput) as caught:
        model.run({"prompt": "", "width": 100, "num_outputs": 9}, RecordingContext())

    assert str(caught.value).count(": must") == 3
    assert unet_calls == []


def raise_in_unet(
    monkeypatch: pytest.MonkeyPatch,
    model: StableDiffusionModel,
    make_error: Callable[[], Exception],
) -> None:
    def failing_forward(*args: Any, **kwargs: Any) -> Any:
        raise make_error()

    monkeypatch.setattr(model.pipeline.unet, "forward", failing_forward)


def test_cuda_out_of_memory_fails_the_job_clearly_and_the_next_job_runs(
    model: StableDiffusionModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    raise_in_unet(
        monkeypatch, model, lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried 9 GiB")
    )

    with pytest.raises(OutOfMemory) as caught:
        run(model, num_outputs=4)

    message = str(caught.value)
    assert "out of memory" in message
    assert "4 image(s) of 64x64" in message
    assert "fewer num_outputs or a smaller width/height" in message
    monkeypatch.undo()
    assert len(run(model)) == 1


def test_a_runtime_error_saying_out_of_memory_is_treated_as_out_of_memory(
    model: StableDiffusionModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    raise_in_unet(monkeypatch, model, lambda: RuntimeError("CUDA error: out of memory"))

    with pytest.raises(OutOfMemory):
        run(model)


def test_any_other_pipeline_error_becomes_a_model_error_naming_its_class(
    model: StableDiffusionModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    raise_in_unet(monkeypatch, model, lambda: ValueError("shapes do not match"))

    with pytest.raises(ModelError, match=r"^ValueError: shapes do not match$") as caught:
        run(model)

    assert not isinstance(caught.value, OutOfMemory)
    # Not chained: the original's traceback would keep the failed call's tensors alive.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_loading_twice_keeps_the_loaded_pipeline(model: StableDiffusionModel) -> None:
    pipeline = model.pipeline

    model.load()

    assert model.pipeline is pipeline
    assert model.device == "cpu"
    assert model.pipeline.unet.dtype == torch.float32


