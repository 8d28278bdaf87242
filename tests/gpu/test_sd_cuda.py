"""The Stable Diffusion adapter's CUDA path, with the tiny pipeline: skipped where no GPU is.

Checks what only a GPU can show: fp16 weights everywhere (text encoder included), SDPA attention
and channels-last UNet and VAE after ``load()``; seeds on the GPU (image i of seed s is the
single image of seed s+i, other seeds differ); jobs that still stop at a denoising step; a real
CUDA out-of-memory (provoked by capping this process's share of GPU memory) that fails one job,
gives its memory back and leaves the model working; and a real dead CUDA context (a device-side
assert, in a subprocess) that fails the job with ``DeviceLost``. ``test_sd_cuda_compile.py``
covers torch.compile. Speed is measured by ``python -m bench.sd_gpu``, not here.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion.model import StableDiffusionModel
from domain.errors import ExecutionTimeout, OutOfMemory

torch = pytest.importorskip("torch")
PIL_Image = pytest.importorskip("PIL.Image")
np = pytest.importorskip("numpy")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SMALL = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "num_inference_steps": 3}
MIB = 1024 * 1024


class StepContext:
    """Records progress; raises ExecutionTimeout once ``stop_after_step`` steps were reported."""

    def __init__(self, stop_after_step: int | None = None) -> None:
        self.stop_after_step = stop_after_step
        self.updates: list[Any] = []

    @property
    def job_id(self) -> str:
        return "gpu-job"

    def check_cancelled(self) -> None:
        if self.stop_after_step is not None and len(self.updates) >= self.stop_after_step:
            raise ExecutionTimeout(1000)

    def progress(self, update: Any) -> None:
        self.updates.append(update)


@pytest.fixture(scope="module")
def cuda_model(tiny_sd_path: Path) -> Iterator[StableDiffusionModel]:
    model = StableDiffusionModel(str(tiny_sd_path), device="cuda")
    model.load()
    yield model
    del model
    torch.cuda.empty_cache()


def pixels(item: dict[str, Any]) -> Any:
    return np.asarray(PIL_Image.open(io.BytesIO(item["image"].data)), dtype=int)


def test_load_on_cuda_uses_fp16_sdpa_and_a_channels_last_unet(
    cuda_model: StableDiffusionModel,
) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe = cuda_model.pipeline

    assert cuda_model.device == "cuda"
    assert pipe.unet.dtype == torch.float16
    assert pipe.vae.dtype == torch.float16
    assert pipe.text_encoder.dtype == torch.float16
    assert pipe.unet.device.type == "cuda"
    assert all(isinstance(p, AttnProcessor2_0) for p in pipe.unet.attn_processors.values())
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    attention = cuda_model.setup.attention
    assert attention is not None and attention.serving != "unknown", attention
    print(f"attention serving jobs: {attention.describe()}")


def test_a_cuda_job_returns_pngs_of_the_requested_size_and_repeats_for_a_seed(
    cuda_model: StableDiffusionModel,
) -> None:
    first = cuda_model.run({**SMALL, "num_outputs": 2, "seed": 7}, StepContext())
    again = cuda_model.run({**SMALL, "num_outputs": 2, "seed": 7}, StepContext())

    assert [item["seed"] for item in first] == [7, 8]
    assert all(pixels(item).shape == (64, 64, 3) for item in first)
    assert np.abs(pixels(first[0]) - pixels(again[0])).max() <= 1


def test_a_cuda_job_stops_at_a_denoising_step(cuda_model: StableDiffusionModel) -> None:
    ctx = StepContext(stop_after_step=2)

    with pytest.raises(ExecutionTimeout):
        cuda_model.run({**SMALL, "num_inference_steps": 20}, ctx)

    assert [u["step"] for u in ctx.updates] == [1, 2]


def test_a_real_cuda_out_of_memory_fails_the_job_frees_its_memory_and_the_next_job_runs(
    cuda_model: StableDiffusionModel,
) -> None:
    torch.cuda.empty_cache()
    allocated_before = torch.cuda.memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    # Room for 64 MiB more than now: a 1024x1024 batch of 4 needs far more in the VAE alone.
    fraction = (torch.cuda.memory_reserved() + 64 * MIB) / total
    torch.cuda.set_per_process_memory_fraction(fraction)
    try:
        with pytest.raises(OutOfMemory, match="fewer num_outputs or a smaller width/height"):
            cuda_model.run(
                {**SMALL, "width": 1024, "height": 1024, "num_outputs": 4}, StepContext()
            )
        assert torch.cuda.memory_allocated() <= allocated_before + MIB
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)

    output = cuda_model.run({**SMALL, "num_outputs": 1, "seed": 1}, StepContext())
    assert pixels(output[0]).shape == (64, 64, 3)


def test_image_i_of_a_cuda_job_is_the_single_image_of_seed_plus_i_and_other_seeds_differ(
    cuda_model: StableDiffusionModel,
) -> None:
    batch = cuda_model.run({**SMALL, "num_outputs": 3, "seed": 40}, StepContext())
    alone = cuda_model.run({**SMALL, "num_outputs": 1, "seed": 42}, StepContext())
    other = cuda_model.run({**SMALL, "num_outputs": 1, "seed": 1042}, StepContext())

    same = np.abs(pixels(batch[2]) - pixels(alone[0]))
    # fp16 kernels may pick other algorithms for a batch of 3 and a batch of 1, and random
    # weights amplify rounding: a small mean, and few pixels off by more than a few levels
    assert same.mean() < 1.5 and (same > 8).mean() < 0.01
    assert np.abs(pixels(batch[0]) - pixels(batch[1])).mean() > 5
    assert np.abs(pixels(alone[0]) - pixels(other[0])).mean() > 5


_DEVICE_ASSERT = """
import json, os, sys, torch
from adapters.stable_diffusion.model import StableDiffusionModel
from domain.errors import DeviceLost

model = StableDiffusionModel(sys.argv[1], device="cuda")
model.load()
eager = model.pipeline.unet.forward

def out_of_bounds(sample, *args, **kwargs):
    index = torch.tensor([10**6], device=sample.device)
    return eager(sample + torch.zeros(4, device=sample.device)[index].sum(), *args, **kwargs)

model.pipeline.unet.forward = out_of_bounds
job = {"prompt": "x", "width": 64, "height": 64, "num_inference_steps": 2}

class Ctx:
    job_id = "lost"
    def check_cancelled(self): pass
    def progress(self, update): pass

kinds = []
for _ in range(2):
    try:
        model.run(job, Ctx())
        kinds.append(["ok", ""])
    except DeviceLost as exc:
        kinds.append(["DeviceLost", str(exc)])
    except Exception as exc:
        kinds.append([type(exc).__name__, str(exc)])
print(json.dumps(kinds), flush=True)
os._exit(0)  # no interpreter teardown on a poisoned CUDA context (it can hang or crash)
"""


def test_a_device_side_assert_fails_the_job_with_device_lost_and_later_jobs_at_once(
    tiny_sd_path: Path,
) -> None:
    # In a subprocess: a device-side assert poisons the CUDA context of the whole process.
    done = subprocess.run(
        [sys.executable, "-c", _DEVICE_ASSERT, str(tiny_sd_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    kinds = json.loads(done.stdout.strip().splitlines()[-1])
    assert [kind for kind, _ in kinds] == ["DeviceLost", "DeviceLost"], kinds
    assert "the GPU is unusable" in kinds[0][1]
