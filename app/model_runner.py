"""The model stage: one long-lived thread that loads the model, then runs jobs on it.

Why one thread for both: CUDA state, cuDNN plans, cuBLAS handles and CUDA-graph trees are per
thread, so warm-up on another thread than the jobs' would be paid again by the first job. The
controller keeps its own thread free to watch deadlines, signals and the idle TTL.

What it promises: whatever ``model.load`` or ``model.run`` raises — ``Exception``,
``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, a bare ``BaseException``, an exception
whose ``__str__`` raises — becomes a :class:`~app.messages.ModelLoaded` or
:class:`~app.messages.ModelDone` carrying a described, scrubbed error, and the thread goes on to
the next job; nothing is raised into the worker. The exception and its traceback are dropped at
once (a held traceback keeps the failed call's tensors alive). A model that ignores its cancel
check cannot be stopped from Python: the controller gives up on it (``Action.ABANDON``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable

from app.messages import Inbox, ModelDone, ModelLoaded
from domain.errors import DeviceLost, ExecutionTimeout
from domain.execution import RunningJob
from domain.outputs import describe_error
from domain.ports import Clock, Model

log = logging.getLogger("podworker.model")

QUIET_ERRORS = (ValueError, LookupError, TypeError)  # the model's own input checks: no traceback


class ModelRunner:
    """Runs ``RunningJob``s on ``model`` one at a time; reports each outcome on ``inbox``."""

    slots = 1

    def __init__(
        self, model: Model, clock: Clock, inbox: Inbox, scrub: Callable[[str], str]
    ) -> None:
        self._model = model
        self._clock = clock
        self._inbox = inbox
        self._scrub = scrub
        self._jobs: queue.SimpleQueue[RunningJob | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="model", daemon=True)

    def start(self) -> None:
        """Start the thread: it loads the model first and reports ``ModelLoaded``."""
        self._thread.start()

    def submit(self, running: RunningJob) -> None:
        """Run ``running`` (the controller makes sure a slot is free)."""
        self._jobs.put(running)

    def stop(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        started = self._clock.now()
        error, _ = self._call(self._model.load)
        self._inbox.put(ModelLoaded(error=error, seconds=self._clock.now() - started))
        if error is not None:
            return
        while True:
            running = self._jobs.get()
            if running is None:
                return
            self._inbox.put(self._run_one(running))

    def _run_one(self, running: RunningJob) -> ModelDone:
        started = self._clock.now()
        output: object = None

        def call() -> None:
            nonlocal output
            output = self._model.run(running.job.input, running)
            if running.timed_out(self._clock.now()):  # finished past its deadline
                raise ExecutionTimeout(round(running.timeout_s * 1000))

        error, fatal = self._call(call, job_id=running.job_id)
        return ModelDone(running=running, output=None if error else output, error=error,
                         seconds=self._clock.now() - started, device_lost=fatal)

    def _call(
        self, call: Callable[[], object], job_id: str | None = None
    ) -> tuple[str | None, bool]:
        """Run ``call``: (None, False) when it returned, else (its error described, whether the
        device is lost). Never raises."""
        try:
            call()
        except BaseException as exc:  # a model's SystemExit is its job's error, too
            if not isinstance(exc, QUIET_ERRORS) and log.isEnabledFor(logging.DEBUG):
                with contextlib.suppress(BaseException):  # a hostile exception may break logging
                    log.debug("model raised", exc_info=True, extra={"job_id": job_id})
            described = self._scrub(describe_error(exc))
            fatal = isinstance(exc, DeviceLost)
            exc.__traceback__ = None  # frees the failed call's locals (tensors) now
            del exc
            return described, fatal
        return None, False
