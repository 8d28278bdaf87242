"""The model stage: one long-lived thread that runs jobs on the model, one at a time.

The model always runs on the same thread (CUDA state and thread-local caches stay put), while
the controller keeps its own thread free to watch deadlines, signals and the idle TTL. A model
that ignores its cancel check cannot be stopped from Python: the controller then gives up on it
(see ``domain.lifecycle.Action.ABANDON``) and the process exits on purpose.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from app.delivery import Finished
from domain.errors import ExecutionTimeout
from domain.execution import RunningJob
from domain.ports import Clock, Model

log = logging.getLogger("podworker.model")


class ModelRunner:
    """Runs ``RunningJob``s on ``model``, hands each outcome to ``on_finished``, then calls
    ``on_free`` (so the controller takes the next job without delay)."""

    def __init__(
        self,
        model: Model,
        clock: Clock,
        on_finished: Callable[[Finished], None],
        on_free: Callable[[], None] = lambda: None,
    ) -> None:
        self._model = model
        self._clock = clock
        self._on_finished = on_finished
        self._on_free = on_free
        self._jobs: queue.Queue[RunningJob | None] = queue.Queue(maxsize=1)
        self._lock = threading.Lock()
        self._current: RunningJob | None = None
        self._thread = threading.Thread(target=self._run, name="model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def current(self) -> RunningJob | None:
        """The job on the model now (None when the model is free)."""
        with self._lock:
            return self._current

    def submit(self, running: RunningJob) -> None:
        """Start ``running``; the caller makes sure the model is free first."""
        with self._lock:
            if self._current is not None:
                raise RuntimeError("the model is busy")
            self._current = running
        self._jobs.put(running)

    def stop(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while True:
            running = self._jobs.get()
            if running is None:
                return
            started = self._clock.now()
            output: object = None
            error: BaseException | None = None
            try:
                output = self._model.run(running.job.input, running)
                if running.timed_out(self._clock.now()):  # finished past its deadline
                    raise ExecutionTimeout(round(running.timeout_s * 1000))
            except Exception as exc:  # any error becomes the job's error result
                error = exc
                if not isinstance(exc, ValueError | LookupError | TypeError):
                    log.debug("model raised", exc_info=True, extra={"job_id": running.job_id})
            finished = Finished(
                job=running.job,
                output=output,
                error=error,
                model_seconds=self._clock.now() - started,
            )
            if not running.abandoned:
                self._on_finished(finished)  # handed over (counted undelivered) before we look free
            with self._lock:
                if self._current is running:
                    self._current = None
            self._on_free()
