"""The pipeline put on its device and made fast there, in one place for the model's load.

In order: read (straight onto the GPU when the weights fit it, :func:`read_weights`), placed
(all on the GPU, or with model CPU offload when the weights do not fit its free memory,
:mod:`.placement`), sped up (SDPA, channels-last, fused QKV, :mod:`.acceleration`),
the VAE made fp16-safe and sliced for batches (:mod:`.vae_precision`), and attention checked
(:mod:`.attention_check`). On the CPU only placement happens. What was decided is returned, for
the log, the tests and the benchmark.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.stable_diffusion import pipelines, placement
from adapters.stable_diffusion.acceleration import speed_up
from adapters.stable_diffusion.attention_check import AttentionReport, check_attention
from adapters.stable_diffusion.families import FamilySpec
from adapters.stable_diffusion.vae_precision import fp16_safe_vae
from domain.errors import ModelError

log = logging.getLogger("podworker.model")


@dataclass
class DeviceSetup:
    device: str
    offloaded: bool = False  # model CPU offload instead of all weights on the GPU
    attention: AttentionReport | None = None  # CUDA only
    vae: str | None = None  # what was done to the VAE, if anything


def read_weights(
    diffusers: Any, spec: FamilySpec, source: str, *, dtype: Any, allow_download: bool,
    straight_to: str | None,
) -> Any:
    """The pipeline, read straight onto ``straight_to`` where diffusers can (``cuda``: no full
    copy in host memory first), else on the host; a straight load that fails is tried once more
    on the host, with a warning (an older diffusers, no accelerate). Raises ``ModelError``."""
    if straight_to is not None and straight_to.startswith("cuda:"):
        log.warning("the weights are read on the host, then moved to %s (they load straight "
                    "only onto %r, the current device)", straight_to, pipelines.DIRECT_DEVICE,
                    extra={"event": "direct_load_skipped"})
    if straight_to == pipelines.DIRECT_DEVICE:
        try:
            return pipelines.load_pipeline(diffusers, spec, source, dtype=dtype,
                                           allow_download=allow_download, device=straight_to)
        except ModelError as exc:
            log.warning("loading the weights straight onto %s failed (%s): loading them on the "
                        "host, then moving them", straight_to, exc,
                        extra={"event": "direct_load_failed"})
    return pipelines.load_pipeline(diffusers, spec, source, dtype=dtype,
                                   allow_download=allow_download)


def offload_needed(
    torch: Any, *, source: str, device: str, dtype: Any,
    free_bytes: Callable[[], int] | None = None,
) -> bool:
    """Whether the weights under ``source`` (and room to run) exceed ``device``'s free memory:
    decided from the files' headers before any weight is read (so weights that fit can load
    straight onto the GPU), and said in the log when they do not. False off CUDA.
    ``free_bytes`` tells the GPU's free memory (default: CUDA's own count)."""
    if not device.startswith("cuda"):
        return False
    free = free_bytes() if free_bytes is not None else int(torch.cuda.mem_get_info(device)[0])
    weights = (placement.weights_bytes(Path(source), dtype.itemsize)
               if Path(source).is_dir() else 0)
    if not placement.needs_offload(weights, free):
        return False
    log.warning(
        "the weights (%s) do not fit the GPU's free memory (%s) with room to run: loading "
        "with model CPU offload (each part moves to the GPU while it runs; slower)",
        placement.gib(weights), placement.gib(free), extra={"event": "model_cpu_offload"})
    return True


def place_and_speed_up(
    torch: Any, pipe: Any, *, device: str, dtype: Any, offload: bool, channels_last: bool,
    fuse_qkv: bool, batch_rows: int, upcasting_vae: bool = False,
) -> tuple[Any, DeviceSetup]:
    """``pipe`` on ``device`` and made fast there (module docstring); ``offload`` is
    :func:`offload_needed`'s answer, asked before the weights were read; ``upcasting_vae`` says
    the pipeline honours its VAE's ``force_upcast`` (SDXL's do; SD 1.x's never upcast). A
    pipeline already loaded onto ``device`` is not moved again (``to`` does nothing). Raises
    what torch or diffusers raise."""
    setup = DeviceSetup(device)
    if not device.startswith("cuda"):
        return pipe.to(device), setup
    if offload:
        pipe.enable_model_cpu_offload(device=device)
        setup.offloaded = True
    else:
        pipe = pipe.to(device)
    speed_up(torch, pipe, channels_last=channels_last, fuse_qkv=fuse_qkv)
    setup.vae = fp16_safe_vae(torch, pipe.vae, on_cuda=True, batch_rows=batch_rows,
                              upcasting=upcasting_vae)
    setup.attention = check_attention(torch, device, dtype)
    return pipe, setup
