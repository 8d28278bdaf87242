"""The context one job runs in: its deadline, its cancel flag and its progress sink.

:class:`RunningJob` is what a model receives as its ``JobContext``. It is pure: the clock and
the progress sink are handed in, and cancellation is a plain attribute the controller sets (on a
platform job-stop) and the model reads at its next step, as it reads the work timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domain.errors import ExecutionTimeout, JobCancelled
from domain.job import Job
from domain.ports import Clock


class RunningJob:
    """A job on the model: ``check_cancelled()`` raises once past its deadline or stopped."""

    def __init__(
        self,
        job: Job,
        *,
        started: float,
        timeout_s: float,
        clock: Clock,
        on_progress: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.job = job
        self.started = started
        self.timeout_s = timeout_s
        self.deadline = started + timeout_s
        self._clock = clock
        self._on_progress = on_progress
        self.cancel_reason: str | None = None
        self.fresh_worker_asked = False
        self._cancel_hooks: list[Callable[[], object]] = []

    @property
    def job_id(self) -> str:
        return self.job.id

    def cancel(self, reason: str) -> None:
        """Ask the job to stop at its next ``check_cancelled()`` (and call the cancel hooks: an
        async job's task is cancelled at once); the first reason wins."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
            for hook in list(self._cancel_hooks):
                hook()

    def on_cancel(self, hook: Callable[[], object]) -> None:
        """Call ``hook`` when the job is cancelled (at once, when it already is)."""
        self._cancel_hooks.append(hook)
        if self.cancel_reason is not None:
            hook()

    def timed_out(self, now: float) -> bool:
        return now >= self.deadline

    def check_cancelled(self) -> None:
        if self.cancel_reason is not None:
            raise JobCancelled(self.cancel_reason)
        if self.timed_out(self._clock.now()):
            raise ExecutionTimeout(round(self.timeout_s * 1000))

    def progress(self, update: Any) -> None:
        if self._on_progress is not None:
            self._on_progress(self.job.id, update)

    @property
    def platform_fields(self) -> dict[str, Any]:
        """The job's top-level fields beside ``id`` and ``input``, as taken (RunPod's
        ``s3Config``...): an optional capability of a context, beyond ``JobContext``, read by
        the SDK handler adapter, whose handlers see the whole job."""
        return self.job.platform_fields

    def ask_for_fresh_worker(self) -> None:
        """Replace this worker once the job's result is delivered (RunPod's ``refresh_worker``):
        the result asks the platform for a fresh worker (``"stopPod": true``), and the controller,
        reading the flag when the job ends, has this worker drain and exit (code 7). An optional
        capability of a context, beyond ``JobContext``: models look it up."""
        self.fresh_worker_asked = True


class DetachedContext:
    """A job context outside the worker (the bake's check image, benchmarks, tests): never
    cancelled, progress dropped. It exists so that those callers do not each write one."""

    def __init__(self, job_id: str = "detached") -> None:
        self.job_id = job_id

    def check_cancelled(self) -> None:
        return None

    def progress(self, update: Any) -> None:
        return None

    def ask_for_fresh_worker(self) -> None:
        return None  # no worker to replace
