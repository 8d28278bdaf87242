"""Running jobs on the Stable Diffusion adapter in tests (tests/integration/test_stable_diffusion*).

:class:`RecordingContext` records progress and can stop a job once a step count is reached;
:func:`run` runs a small (64x64, 3 steps) job; :func:`decode` opens an output as an image.
"""

from __future__ import annotations

import io
from typing import Any

from adapters.stable_diffusion.model import StableDiffusionModel
from domain.errors import ExecutionTimeout
from domain.job import Artifact

SMALL = {"prompt": "a photo of an astronaut riding a horse", "width": 64, "height": 64}


class RecordingContext:
    """A job context that records progress and can stop the job once a step count is reached."""

    def __init__(
        self, *, stop_after_step: int | None = None, error: Exception | None = None
    ) -> None:
        self.stop_after_step = stop_after_step
        self.error = error or ExecutionTimeout(1000)
        self.updates: list[Any] = []
        self.checks = 0

    @property
    def job_id(self) -> str:
        return "job-1"

    def check_cancelled(self) -> None:
        self.checks += 1
        if self.stop_after_step is not None and len(self.updates) >= self.stop_after_step:
            raise self.error

    def progress(self, update: Any) -> None:
        self.updates.append(update)


def run(model: StableDiffusionModel, ctx: RecordingContext | None = None, **fields: Any) -> Any:
    return model.run({**SMALL, "num_inference_steps": 3, **fields}, ctx or RecordingContext())


def decode(artifact: Artifact) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(artifact.data))
