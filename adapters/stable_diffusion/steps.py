"""Progress and cancellation at every denoising step, through diffusers' step callback.

A job may run more than one pipeline call (SDXL's base, then its refiner): the reporter is told
each call's steps (``stages``) and moves to the next with :meth:`StepReporter.next_stage`, so
progress counts ``1..steps`` across all of them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from domain.ports import JobContext


class StepReporter:
    """diffusers' ``callback_on_step_end`` for a job's calls: at each step, asks
    ``still_running`` which jobs are still wanted (it raises to stop the call, when none is),
    then reports the step to each of them as ``{"step": k, "of": n}``. ``stages``: the steps of
    each call, in order; ``n`` is their sum."""

    def __init__(
        self, still_running: Callable[[], Sequence[JobContext]], stages: Sequence[int]
    ) -> None:
        self.still_running = still_running
        self.stages = tuple(stages)
        self.steps = sum(self.stages)
        self.stage = 0
        self.reported = 0

    def next_stage(self) -> None:
        """The job's next pipeline call begins (the refiner's, after the base's)."""
        self.stage = min(self.stage + 1, len(self.stages) - 1)

    def __call__(
        self, pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        contexts = self.still_running()
        # Some schedulers evaluate the UNet more often than once a step (HEUN twice, PNDM once
        # more): map the evaluation index onto the 1..steps the job asked for.
        span, done = self.stages[self.stage], sum(self.stages[:self.stage])
        evaluations = max(int(getattr(pipe, "num_timesteps", 0) or 0), span, 1)
        step = done + min(span, math.ceil((index + 1) * span / evaluations))
        if step > self.reported:
            self.reported = step
            for ctx in contexts:
                ctx.progress({"step": step, "of": self.steps})
        return {}
