"""Progress and cancellation at every denoising step, through diffusers' step callback."""

from __future__ import annotations

import math
from typing import Any

from domain.ports import JobContext


class StepReporter:
    """diffusers' ``callback_on_step_end``: checks for cancellation, then reports the step."""

    def __init__(self, ctx: JobContext, steps: int) -> None:
        self.ctx = ctx
        self.steps = steps
        self.reported = 0

    def __call__(
        self, pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        self.ctx.check_cancelled()
        # Some schedulers evaluate the UNet more often than once a step (HEUN twice, PNDM once
        # more): map the evaluation index onto the 1..steps the job asked for.
        evaluations = max(int(getattr(pipe, "num_timesteps", 0) or 0), self.steps)
        step = min(self.steps, math.ceil((index + 1) * self.steps / evaluations))
        if step > self.reported:
            self.reported = step
            self.ctx.progress({"step": step, "of": self.steps})
        return {}
