"""The CUDA fast path per family, exercised on the CPU (the GPU tests check it on CUDA).

SD3's and Flux's transformers keep their own attention processors (joint attention) and layout;
their VAEs, like SD's and SDXL's UNets and VAEs, get SDPA and channels-last. ``torch.compile``
compiles SDXL's UNet whole and SD3's and Flux's transformers by their repeated blocks, at load
(eager backend here), and their jobs compile nothing new. The
family's CUDA dtype is fp16 for SD and SDXL, bf16 for SD3 and Flux.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion import acceleration
from adapters.stable_diffusion.acceleration import CompileOptions, speed_up
from adapters.stable_diffusion.families import family_spec
from adapters.stable_diffusion.limits import SdLimits
from adapters.stable_diffusion.model import StableDiffusionModel
from adapters.stable_diffusion.pipelines import family_dtype
from tests.support.sd_jobs import StepContext, decode

torch = pytest.importorskip("torch")
counters = pytest.importorskip("torch._dynamo.utils").counters

JOB: dict[str, Any] = {"prompt": "a lighthouse", "width": 64, "height": 64,
                       "num_inference_steps": 2, "seed": 5}


def fresh(path: Path, **options: Any) -> StableDiffusionModel:
    model = StableDiffusionModel(str(path), device="cpu", **options)
    model.load()
    return model


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_a_transformer_keeps_its_attention_processors_and_the_vae_gets_sdpa(
    family: str, tiny_family_path: Callable[[str], Path]
) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    model = fresh(tiny_family_path(family))
    pipe = model.pipeline
    before = {name: type(p) for name, p in pipe.transformer.attn_processors.items()}

    speed_up(torch, pipe, channels_last=True, fuse_qkv=False)

    assert {name: type(p) for name, p in pipe.transformer.attn_processors.items()} == before
    assert all(isinstance(p, AttnProcessor2_0) for p in pipe.vae.attn_processors.values())
    assert pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    result = model.run(JOB, StepContext())
    with decode(result[0]["image"]) as image:
        assert image.size == (64, 64)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_fused_qkv_reaches_a_transformers_attention_and_its_images_stay_the_same(
    family: str, tiny_family_path: Callable[[str], Path]
) -> None:
    model = fresh(tiny_family_path(family))
    pipe = model.pipeline
    before = model.run(JOB, StepContext())

    speed_up(torch, pipe, channels_last=False, fuse_qkv=True)

    fused = [m for m in pipe.transformer.modules() if getattr(m, "fused_projections", False)]
    assert fused, "no attention of the transformer was fused"
    after = model.run(JOB, StepContext())
    with decode(before[0]["image"]) as one, decode(after[0]["image"]) as two:
        difference = [abs(a - b) for a, b in zip(one.tobytes(), two.tobytes(), strict=True)]
    assert max(difference) <= 2


def test_sdxls_unet_gets_the_fast_path_too(tiny_family_path: Callable[[str], Path]) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    model = fresh(tiny_family_path("sdxl"))
    pipe = model.pipeline

    speed_up(torch, pipe, channels_last=True, fuse_qkv=False)

    assert all(isinstance(p, AttnProcessor2_0) for p in pipe.unet.attn_processors.values())
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert len(model.run(JOB, StepContext())) == 1


@pytest.mark.timeout(600)
@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_a_transformers_repeated_blocks_are_compiled_at_load_and_its_jobs_compile_nothing_new(
    family: str, tiny_family_path: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acceleration, "JOB_STANCE", "fail_on_recompile")
    torch._dynamo.reset()
    counters.clear()
    model = fresh(tiny_family_path(family), limits=SdLimits(max_outputs=1), sizes=[(64, 64)],
                  compile=CompileOptions(backend="eager"))
    warmed = int(counters["stats"]["unique_graphs"])

    assert len(model.run(JOB, StepContext())) == 1

    assert model.compilation is not None and model.compilation.active
    blocks = acceleration.repeated_blocks(model.pipeline.transformer)
    assert blocks and all(isinstance(b.forward, acceleration._CompiledForward) for b in blocks)
    assert warmed > 0
    assert int(counters["stats"]["unique_graphs"]) == warmed


@pytest.mark.timeout(600)
def test_sdxls_unet_is_compiled_at_load_and_its_jobs_compile_nothing_new(
    tiny_family_path: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acceleration, "JOB_STANCE", "fail_on_recompile")
    counters.clear()
    model = fresh(tiny_family_path("sdxl"), limits=SdLimits(max_outputs=1), sizes=[(64, 64)],
                  compile=CompileOptions(backend="eager"))
    warmed = int(counters["stats"]["unique_graphs"])

    for guidance in (7.5, 1.0):
        assert len(model.run({**JOB, "guidance_scale": guidance}, StepContext())) == 1

    assert int(counters["stats"]["unique_graphs"]) == warmed
    assert model.compilation is not None and model.compilation.active


def test_each_family_has_its_cuda_dtype() -> None:
    dtypes = {name: family_dtype(torch, family_spec(name), on_cuda=True)
              for name in ("sd", "sdxl", "sd3", "flux")}
    assert dtypes == {"sd": torch.float16, "sdxl": torch.float16, "sd3": torch.bfloat16,
                      "flux": torch.bfloat16}
    assert family_dtype(torch, family_spec("flux"), on_cuda=False) == torch.float32
