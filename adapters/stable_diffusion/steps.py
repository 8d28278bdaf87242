"""Progress and cancellation at every denoising step, through diffusers' step callback."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from domain.ports import JobContext


class StepReporter:
    """diffusers' ``callback_on_step_end`` for one call: at each step, asks ``still_running``
    which jobs are still wanted (it raises to stop the call, when none is), then reports the
    step to each of them as ``{"step": k, "of": steps}``."""

    def __init__(self, still_running: Callable[[], Sequence[JobContext]], steps: int) -> None:
        self.still_running = still_running
        self.steps = steps
        self.reported = 0

    @classmethod
    def for_job(cls, ctx: JobContext, steps: int) -> StepReporter:
        """The reporter of a call that runs one job alone."""

        def still_running() -> Sequence[JobContext]:
            ctx.check_cancelled()
            return (ctx,)

        return cls(still_running, steps)

    def __call__(
        self, pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        contexts = self.still_running()
        # Some schedulers evaluate the UNet more often than once a step (HEUN twice, PNDM once
        # more): map the evaluation index onto the 1..steps the job asked for.
        evaluations = max(int(getattr(pipe, "num_timesteps", 0) or 0), self.steps)
        step = min(self.steps, math.ceil((index + 1) * self.steps / evaluations))
        if step > self.reported:
            self.reported = step
            for ctx in contexts:
                ctx.progress({"step": step, "of": self.steps})
        return {}
