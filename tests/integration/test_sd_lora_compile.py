"""LoRA jobs with ``MODEL_COMPILE``: they run eager, nothing is compiled during a job, and a job
without LoRA afterwards runs the graphs compiled at load and gets the base image bit for bit.

On the CPU with dynamo's ``eager`` backend (tracing, guards and caching as on a GPU), under the
``fail_on_recompile`` stance: a job that needed a new graph would fail loudly (and turn compiling
off, which the test checks did not happen).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion import acceleration
from adapters.stable_diffusion.acceleration import CompileOptions
from adapters.stable_diffusion.limits import SdLimits
from tests.support.sd_lora_kit import SMALL, lora_folder, lora_model, run_pixels, same

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
counters = pytest.importorskip("torch._dynamo.utils").counters

pytestmark = pytest.mark.usefixtures("fresh_dynamo")  # dynamo's caches are process-wide

JOB: dict[str, Any] = {"prompt": "a lighthouse", "seed": 5, **SMALL}




@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lora_jobs_run_eager_and_the_next_job_without_lora_runs_compiled_as_before(
    tiny_sd_path: Path, tiny_lora: Callable[..., Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(acceleration, "JOB_STANCE", "fail_on_recompile")
    folder = lora_folder(tmp_path / "loras", {"a": tiny_lora("sd", seed=1),
                                              "b": tiny_lora("sd", seed=2, text_encoder=True)})
    options: dict[str, Any] = {"limits": SdLimits(max_outputs=1), "sizes": [(64, 64)]}
    compiled = lora_model(tiny_sd_path, folder, cache_dir=tmp_path / "c1",
                          compile=CompileOptions(backend="eager"), **options)
    warmed = int(counters["stats"]["unique_graphs"])
    eager = lora_model(tiny_sd_path, folder, cache_dir=tmp_path / "c2", **options)

    base = run_pixels(compiled, JOB)
    with_a = run_pixels(compiled, {**JOB, "lora": "a"})
    with_both = run_pixels(compiled, {**JOB, "loras": [{"name": "a"}, {"name": "b"}]})
    again = run_pixels(compiled, JOB)
    unguided = run_pixels(compiled, {**JOB, "guidance_scale": 1.0})
    with_a_again = run_pixels(compiled, {**JOB, "lora": "a"})

    assert compiled.compilation is not None and compiled.compilation.active
    assert int(counters["stats"]["unique_graphs"]) == warmed, "a job compiled a graph"
    assert same(again, base)
    assert same(unguided, run_pixels(eager, {**JOB, "guidance_scale": 1.0}))
    assert same(with_a, run_pixels(eager, {**JOB, "lora": "a"}))  # eager: as without compile
    assert same(with_both, run_pixels(eager, {**JOB, "loras": [{"name": "a"},
                                                              {"name": "b"}]}))
    assert same(with_a_again, with_a)
    assert compiled.adapters is not None and compiled.adapters.loads == 3  # a, b, a again
