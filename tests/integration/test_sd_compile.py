"""torch.compile in the Stable Diffusion adapter, on the CPU with dynamo's ``eager`` backend.

The ``eager`` backend runs dynamo's tracing, guards and caching exactly as on a GPU but hands the
graphs to plain PyTorch, so it shows what a GPU would compile and when, in seconds. Every test
resets dynamo first: its caches are process-wide.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion import acceleration
from adapters.stable_diffusion.acceleration import CompileOptions
from adapters.stable_diffusion.limits import SdLimits
from adapters.stable_diffusion.model import StableDiffusionModel
from adapters.stable_diffusion.schedulers import SCHEDULER_NAMES
from domain.execution import DetachedContext

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")  # K-LMS is one of the schedulers served
counters = pytest.importorskip("torch._dynamo.utils").counters

pytestmark = pytest.mark.usefixtures("fresh_dynamo")  # dynamo's caches are process-wide

SIZE = {"width": 64, "height": 64}
LIMITS = SdLimits(max_outputs=2)
QUIET = DetachedContext("job-compile")  # never cancelled, progress dropped




def graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


def job(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a lighthouse", **SIZE, "num_inference_steps": 2, "seed": 5, **fields}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_after_warm_up_no_served_batch_guidance_or_scheduler_compiles_again(
    tiny_sd_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Jobs run under "fail_on_recompile": a graph the warm-up missed fails the job, loudly.
    monkeypatch.setattr(acceleration, "JOB_STANCE", "fail_on_recompile")
    model = StableDiffusionModel(
        str(tiny_sd_path), device="cpu", limits=LIMITS, sizes=[(64, 64)],
        compile=CompileOptions(backend="eager", vae=True),
    )

    model.load()

    warmed = graphs()
    assert warmed == 3 + 2  # UNet batches 1, 2 and 4; VAE decoder batches 1 and 2
    for scheduler in SCHEDULER_NAMES:
        for outputs in (1, 2):
            for guidance in (7.5, 1.0, 0.0):
                output = model.run(job(scheduler=scheduler, num_outputs=outputs,
                                       guidance_scale=guidance), QUIET)
                assert len(output) == outputs
    assert graphs() == warmed, "a job compiled a new graph"
    assert model.compilation is not None and model.compilation.active


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_size_that_was_not_warmed_runs_uncompiled_instead_of_compiling_in_the_job(
    tiny_sd_path: Path,
) -> None:
    model = StableDiffusionModel(
        str(tiny_sd_path), device="cpu", limits=SdLimits(max_outputs=1),
        compile=CompileOptions(backend="eager"),
    )
    model.load()  # no sizes given: only 512x512 is warmed
    warmed = graphs()

    output = model.run(job(width=64, height=96), QUIET)

    assert graphs() == warmed
    assert len(output) == 1
    assert model.compilation is not None and model.compilation.active  # no fallback either


@pytest.mark.timeout(600)
def test_a_compile_failure_falls_back_to_eager_with_one_warning_and_jobs_succeed(
    tiny_sd_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_backend(graph: Any, example_inputs: Any) -> Any:
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable")

    model = StableDiffusionModel(
        str(tiny_sd_path), device="cpu", limits=SdLimits(max_outputs=1), sizes=[(64, 64)],
        compile=CompileOptions(backend=broken_backend, vae=True),
    )

    with caplog.at_level(logging.WARNING, logger="podworker.model"):
        model.load()
        first = model.run(job(), QUIET)
        second = model.run(job(num_outputs=1, guidance_scale=1.0), QUIET)

    warnings = [r for r in caplog.records if getattr(r, "event", None) == "compile_failed"]
    assert len(warnings) == 1
    assert "Failed to find C compiler" in warnings[0].getMessage()
    assert model.compilation is not None and not model.compilation.active
    assert first[0]["image"].data.startswith(b"\x89PNG")
    assert second[0]["image"].data.startswith(b"\x89PNG")


def test_a_compiler_that_refuses_at_once_also_falls_back_with_one_warning(
    tiny_sd_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = StableDiffusionModel(
        str(tiny_sd_path), device="cpu", limits=SdLimits(max_outputs=1), sizes=[(64, 64)],
        compile=CompileOptions(backend="no-such-backend"),
    )

    with caplog.at_level(logging.WARNING, logger="podworker.model"):
        model.load()
        output = model.run(job(), QUIET)

    assert [getattr(r, "event", None) for r in caplog.records if hasattr(r, "event")] == [
        "compile_failed"
    ]
    assert model.compilation is not None and not model.compilation.active
    assert output[0]["image"].data.startswith(b"\x89PNG")


def test_compiled_and_uncompiled_models_make_the_same_pixels(tiny_sd_path: Path) -> None:
    """The float32 timestep handed to the compiled UNet changes nothing in the images."""
    plain = StableDiffusionModel(str(tiny_sd_path), device="cpu", limits=SdLimits(max_outputs=1))
    plain.load()
    compiled = StableDiffusionModel(
        str(tiny_sd_path), device="cpu", limits=SdLimits(max_outputs=1), sizes=[(64, 64)],
        compile=CompileOptions(backend="eager"),
    )
    compiled.load()

    for scheduler in ("DDIM", "EULER"):
        a = plain.run(job(scheduler=scheduler), QUIET)[0]["image"].data
        b = compiled.run(job(scheduler=scheduler), QUIET)[0]["image"].data
        assert a == b, scheduler


def test_compiling_raises_dynamos_recompile_limit_to_cover_every_planned_graph(
    tmp_path: Path, tiny_sd_path: Path
) -> None:
    # Where Inductor's files go (each compilation its own folder, restored after) is checked
    # with real Inductor in test_sd_compile_safety.py.
    model = StableDiffusionModel(str(tiny_sd_path), device="cpu")
    model.load()
    options = CompileOptions(cache_dir=tmp_path / "compile-cache")

    acceleration.Compilation(torch, model.pipeline, options, graphs=40)
    try:
        assert torch._dynamo.config.recompile_limit >= 48
    finally:
        del model.pipeline.unet.forward  # the compiled forward is not used here


def test_a_size_outside_the_served_sizes_is_refused_naming_them_before_any_work(
    tiny_sd_path: Path,
) -> None:
    from domain.errors import InvalidInput

    model = StableDiffusionModel(str(tiny_sd_path), device="cpu", sizes=[(64, 64), (64, 128)])
    model.load()
    calls: list[int] = []
    model.pipeline.unet.register_forward_hook(lambda *_: calls.append(1))

    with pytest.raises(InvalidInput) as caught:
        model.run(job(width=128, height=64), QUIET)

    assert str(caught.value) == (
        "invalid input: width x height: 128x64 is not served by this worker; sizes served: "
        "64x64, 64x128"
    )
    assert calls == []
    assert len(model.run(job(width=64, height=128), QUIET)) == 1


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_with_batching_every_batch_the_warm_up_planned_runs_without_compiling(
    tiny_sd_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.sd_batch_kit import run_together

    monkeypatch.setattr(acceleration, "JOB_STANCE", "fail_on_recompile")
    model = StableDiffusionModel(
        str(tiny_sd_path), device="cpu", limits=SdLimits(max_outputs=1), sizes=[(64, 64)],
        compile=CompileOptions(backend="eager", vae=True), batch_max=3, batch_wait_s=0.0,
    )

    model.load()

    warmed = graphs()
    assert warmed == 5 + 3  # UNet batches 1, 2, 3, 4 and 6; VAE decoder batches 1 to 3
    answers = run_together(model, {name: job(seed=n) for n, name in enumerate("abc")})
    assert model.device_queue.batch_sizes == {3: 1}
    assert all(len(answer) == 1 for answer in answers.values()), answers
    assert graphs() == warmed, "a batch compiled a new graph"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_call_is_padded_to_a_warmed_row_count_and_its_extra_images_dropped(
    tiny_sd_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.sd_batch_kit import assert_same_images, pixels

    monkeypatch.setattr(acceleration, "JOB_STANCE", "fail_on_recompile")
    compiled = StableDiffusionModel(
        str(tiny_sd_path), device="cpu", limits=SdLimits(max_outputs=4), sizes=[(64, 64)],
        compile=CompileOptions(backend="eager", vae=True),
    )
    compiled.load()
    warmed = graphs()
    assert warmed == 4 + 3  # UNet batches 1, 2, 4 and 8; VAE decoder batches 1, 2 and 4

    three = compiled.run(job(num_outputs=3), QUIET)  # padded to 4 rows, one dropped

    assert graphs() == warmed, "3 images compiled a graph of their own"
    assert [item["seed"] for item in three] == [5, 6, 7]
    plain = StableDiffusionModel(str(tiny_sd_path), device="cpu", limits=SdLimits(max_outputs=4))
    plain.load()
    alone = pixels(plain.run(job(num_outputs=3), QUIET))
    assert_same_images(pixels(three), alone, other=pixels(plain.run(job(seed=99), QUIET))[0])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_rows_that_ran_out_of_memory_at_warm_up_are_not_served_and_the_rest_are(
    tiny_sd_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    from adapters.stable_diffusion import generation
    from adapters.stable_diffusion import model as model_module
    from domain.errors import InvalidInput, OutOfMemory

    real_generate = generation.generate

    def small_device(torch: Any, pipe: Any, spec: Any, works: list[Any], *args: Any,
                     **kwargs: Any) -> Any:
        if sum(len(work.seeds) for work in works) > 2:
            raise OutOfMemory("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_generate(torch, pipe, spec, works, *args, **kwargs)

    monkeypatch.setattr(model_module, "generate", small_device)
    monkeypatch.setattr(acceleration, "JOB_STANCE", "fail_on_recompile")
    model = StableDiffusionModel(
        str(tiny_sd_path), device="cpu", limits=SdLimits(max_outputs=4), sizes=[(64, 64)],
        compile=CompileOptions(backend="eager", state_dir=tmp_path), batch_max=4,
    )

    model.load()  # loads: 4 images in one call did not fit, 2 did

    assert model.device_queue.max_rows == 2
    assert model.compilation is not None and model.compilation.active
    assert model.compilation.marker is not None
    assert model.compilation.marker.crashed_before() is None, "the next start would run eager"
    with pytest.raises(InvalidInput, match=r"num_outputs: at most 2 on this worker"):
        model.run(job(num_outputs=3), QUIET)
    assert len(model.run(job(num_outputs=2), QUIET)) == 2
