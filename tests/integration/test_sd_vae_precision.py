"""SDXL's VAE on CUDA: bf16 instead of an fp16 VAE upcast to float32 for every decode, taking
the pipelines' fp16 latents as they come; sliced when a call makes several images. The dtype
work is shown on the CPU (bf16 and fp16 convolutions run there too)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion.vae_precision import fp16_safe_vae

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


def sdxl_vae(tiny_family_path: Callable[[str], Path]) -> Any:
    vae = diffusers.AutoencoderKL.from_pretrained(str(tiny_family_path("sdxl") / "vae"))
    vae.register_to_config(force_upcast=True)  # as SDXL's own VAE says
    return vae.to(torch.float16)


def test_an_fp16_vae_that_asks_for_upcasting_decodes_fp16_latents_in_bf16(
    tiny_family_path: Callable[[str], Path],
) -> None:
    vae = sdxl_vae(tiny_family_path)

    done = fp16_safe_vae(torch, vae, on_cuda=True, batch_rows=1)

    assert done is not None and "bf16" in done
    assert vae.dtype == torch.bfloat16
    assert vae.config.force_upcast is False
    latents = torch.randn(1, 4, 8, 8, dtype=torch.float16)
    image = vae.decode(latents, return_dict=False)[0]
    assert image.shape == (1, 3, 64, 64) and bool(torch.isfinite(image.float()).all())
    encoded = vae.encode(torch.rand(1, 3, 64, 64, dtype=torch.float16)).latent_dist.mean
    assert encoded.shape == (1, 4, 8, 8)


def test_batches_decode_one_image_at_a_time_and_the_cpu_is_left_alone(
    tiny_family_path: Callable[[str], Path],
) -> None:
    vae = sdxl_vae(tiny_family_path)
    assert fp16_safe_vae(torch, vae, on_cuda=False, batch_rows=4) is None
    assert vae.dtype == torch.float16

    fp16_safe_vae(torch, vae, on_cuda=True, batch_rows=4)

    assert vae.use_slicing
