"""Helpers for jobs on the Stable Diffusion adapter: a recording job context, input images as
data URLs or plain base64, and decoding a result's PNG. Imports Pillow and numpy when called."""

from __future__ import annotations

import base64
import io
from typing import Any

from domain.errors import ExecutionTimeout
from domain.job import Artifact


class StepContext:
    """A job context that records progress and raises ``error`` at the first cancel check
    after ``stop_after_step`` steps were reported (never, when it is None)."""

    def __init__(self, stop_after_step: int | None = None, error: Exception | None = None) -> None:
        self.stop_after_step = stop_after_step
        self.error = error or ExecutionTimeout(1000)
        self.updates: list[Any] = []

    @property
    def job_id(self) -> str:
        return "job-1"

    def check_cancelled(self) -> None:
        if self.stop_after_step is not None and len(self.updates) >= self.stop_after_step:
            raise self.error

    def progress(self, update: Any) -> None:
        self.updates.append(update)


def noise_image(size: tuple[int, int], seed: int = 0) -> Any:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Any:
    """A greyscale mask of ``size``, white (repaint) inside ``box``."""
    from PIL import Image

    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def png_base64(image: Any) -> str:
    out = io.BytesIO()
    image.save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def data_url(image: Any) -> str:
    return f"data:image/png;base64,{png_base64(image)}"


def decode(artifact: Artifact) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(artifact.data))
