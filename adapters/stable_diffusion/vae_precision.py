"""The VAE in a 16-bit dtype that does not overflow, and one image at a time for batches.

Why: SDXL's VAE overflows in fp16, so its config says ``force_upcast`` and the pipeline decodes
in float32: slower, about twice the peak memory, and a batch that runs out of memory there
throws away all of its denoising. bf16 has float32's range, so the same weights decode in bf16
without overflow (the fp16-fix VAE, whose config does not ask for the upcast, stays fp16).

What :func:`fp16_safe_vae` promises, on CUDA only: a VAE in fp16 whose config asks for the
upcast, in a pipeline that honours it (SDXL's), is moved to bf16 and its config told it need
not upcast; its ``encode`` and ``decode`` take inputs in any float dtype (cast to bf16 on the
way in), so the pipelines' fp16 latents and images go through unchanged. With batches (more
than one image per call), the VAE decodes one image at a time (slicing): the same images, a
bounded peak.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("podworker.model")


def fp16_safe_vae(
    torch: Any, vae: Any, *, on_cuda: bool, batch_rows: int, upcasting: bool = True
) -> str | None:
    """Make ``vae`` fp16-safe and sliced as the module docstring says; what was done, or None.
    ``upcasting``: the pipeline honours ``force_upcast`` (SDXL's; SD 1.x's never upcast, and
    their VAE stays fp16)."""
    if not on_cuda:
        return None
    done: list[str] = []
    upcast = upcasting and getattr(vae.config, "force_upcast", False)
    if vae.dtype == torch.float16 and upcast:
        vae.to(dtype=torch.bfloat16)
        vae.register_to_config(force_upcast=False)
        _cast_inputs(vae, "encode")
        _cast_inputs(vae, "decode")
        done.append("VAE in bf16 (its config asks for float32 decoding in fp16)")
    if batch_rows > 1 and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
        done.append("VAE decodes one image at a time (slicing)")
    if not done:
        return None
    text = "; ".join(done)
    log.info("%s", text, extra={"event": "vae_precision"})
    return text


def _cast_inputs(vae: Any, method: str) -> None:
    original = getattr(vae, method)

    def cast(sample: Any, *args: Any, **kwargs: Any) -> Any:
        return original(sample.to(vae.dtype), *args, **kwargs)

    setattr(vae, method, cast)
