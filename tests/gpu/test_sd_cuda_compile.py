"""torch.compile on CUDA with Inductor (the production backend), on the tiny pipeline.

What the CPU tests cannot show: Inductor and Triton actually compile here (a fallback to eager
means the machine lacks what they need, a C compiler say, and fails the test with the reason);
no job compiles after warm-up; compiled images match uncompiled ones; with CUDA graphs
(``reduce-overhead``) consecutive jobs and multistep schedulers are not corrupted by graph
replays overwriting earlier outputs. Skipped where no GPU is.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion import acceleration
from adapters.stable_diffusion.acceleration import CompileOptions
from adapters.stable_diffusion.limits import SdLimits
from adapters.stable_diffusion.model import StableDiffusionModel
from domain.execution import DetachedContext

torch = pytest.importorskip("torch")
PIL_Image = pytest.importorskip("PIL.Image")
np = pytest.importorskip("numpy")
counters = pytest.importorskip("torch._dynamo.utils").counters

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

JOB = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "num_inference_steps": 4}
ONE = SdLimits(max_outputs=1)
QUIET = DetachedContext("gpu-compile")  # never cancelled, progress dropped


def pixels(item: dict[str, Any]) -> Any:
    return np.asarray(PIL_Image.open(io.BytesIO(item["image"].data)), dtype=int)


@pytest.fixture(scope="module")
def eager(tiny_sd_path: Path) -> StableDiffusionModel:
    model = StableDiffusionModel(str(tiny_sd_path), device="cuda", limits=ONE)
    model.load()
    return model


@pytest.fixture
def fresh_dynamo(tmp_path: Path) -> Iterator[Path]:
    torch._dynamo.reset()
    counters.clear()
    yield tmp_path / "compile-cache"
    torch._dynamo.reset()


def compiled_model(tiny_sd_path: Path, options: CompileOptions) -> StableDiffusionModel:
    model = StableDiffusionModel(
        str(tiny_sd_path), device="cuda", limits=ONE, sizes=[(64, 64)], compile=options
    )
    model.load()
    assert model.compilation is not None
    assert model.compilation.active, f"compile fell back: {model.compilation.failure}"
    return model


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_inductor_compiles_at_load_and_no_job_compiles_or_changes_the_images(
    tiny_sd_path: Path, eager: StableDiffusionModel, fresh_dynamo: Path, mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(acceleration, "JOB_STANCE", "fail_on_recompile")
    options = CompileOptions(mode=mode, vae=True, cache_dir=fresh_dynamo)
    model = compiled_model(tiny_sd_path, options)
    warmed = counters["stats"]["unique_graphs"]

    for scheduler in ("DDIM", "EULER", "DPM++", "HEUN"):
        for guidance in (7.5, 1.0):
            job = {**JOB, "scheduler": scheduler, "guidance_scale": guidance, "seed": 11}
            got = pixels(model.run(job, QUIET)[0])
            want = pixels(eager.run(job, QUIET)[0])
            assert np.abs(got - want).mean() < 2.0, (scheduler, guidance)

    assert counters["stats"]["unique_graphs"] == warmed
    assert any(fresh_dynamo.rglob("*")), "nothing in the Inductor cache folder"


@pytest.mark.timeout(900)
def test_with_cuda_graphs_consecutive_jobs_keep_their_own_images(
    tiny_sd_path: Path, fresh_dynamo: Path
) -> None:
    model = compiled_model(tiny_sd_path, CompileOptions(mode="reduce-overhead",
                                                        cache_dir=fresh_dynamo))

    first = model.run({**JOB, "seed": 1, "scheduler": "DPM++"}, QUIET)
    second = model.run({**JOB, "seed": 2, "scheduler": "DPM++"}, QUIET)
    again = model.run({**JOB, "seed": 1, "scheduler": "DPM++"}, QUIET)

    assert np.abs(pixels(first[0]) - pixels(second[0])).mean() > 5
    assert np.abs(pixels(first[0]) - pixels(again[0])).max() <= 1
