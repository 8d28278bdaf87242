"""Where the pipeline's weights live: all on the GPU, or on the host with model CPU offload.

Why: a model larger than the GPU's free memory (Flux's 12B transformer and 4.7B T5 encoder on a
24 GB card, say) fails at ``pipe.to("cuda")`` with an out-of-memory error, and a restarted pod
fails the same way. With diffusers' model CPU offload each part (text encoders, denoiser, VAE)
moves to the GPU only while it runs: slower, but it serves.

What :func:`needs_offload` promises: the weights' size in the dtype they will be loaded in
(:func:`weights_bytes`, read from the files' headers, no tensor loaded) plus room for
activations (:data:`ACTIVATION_ROOM`, at least :data:`MIN_ROOM`) is compared with the GPU's
free memory; more than that is offloaded, and the model's load says so in the log.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

ACTIVATION_ROOM = 0.2  # of the weights' size, kept free for activations
MIN_ROOM = 2 * 2**30  # bytes: at least this much kept free
_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
          "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def weights_bytes(folder: Path, load_bytes_per_value: int) -> int:
    """Bytes the floating-point weights under ``folder`` take once loaded at
    ``load_bytes_per_value`` (2 for fp16/bf16, 4 for fp32); other tensors as stored. Reads
    only the safetensors headers; ``.bin`` files count at their size."""
    total = 0
    for path in folder.rglob("*"):
        if path.suffix == ".safetensors":
            total += _safetensors_bytes(path, load_bytes_per_value)
        elif path.suffix == ".bin" and path.is_file():
            total += path.stat().st_size
    return total


def _safetensors_bytes(path: Path, load_bytes: int) -> int:
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for side in entry["shape"]:
            count *= side
        dtype = entry["dtype"]
        floating = dtype.startswith(("F", "BF"))
        total += count * (load_bytes if floating else _BYTES.get(dtype, 4))
    return total


def needs_offload(weights: int, free: int) -> bool:
    """Whether ``weights`` bytes (and room for activations) do not fit in ``free`` bytes."""
    room = max(MIN_ROOM, int(weights * ACTIVATION_ROOM))
    return weights + room > free


def gib(count: int) -> str:
    return f"{count / 2**30:.1f} GiB"
