"""The model stage: loads the model, then runs jobs on it, as many at once as it has slots.

How a job runs depends on the model's ``run``:

- a plain ``def run`` runs on the stage's threads (one per slot, started as needed). With one
  slot (the default), ``load()`` and every job run on the same thread ("model"): CUDA state,
  cuDNN plans and CUDA-graph trees are per thread, so warm-up on another thread would be paid
  again by the first job (Stable Diffusion runs all its pipeline calls on its own thread);
- an ``async def run`` runs as a task on one event loop the stage owns ("model-loop"); the work
  timeout and a platform job-stop cancel the task;
- a ``run`` that is a generator (or async generator) **streams**: each value it yields is handed
  to ``on_chunk`` at once (stored and posted in order, before the final result); the final
  output is the list of chunks when ``aggregate`` is on or the model's ``aggregate_stream`` is
  True (the SDK's ``return_aggregate_stream``), else an empty list (as the SDK sends).

Which of these a model's ``run`` is, is read at construction and again once ``load()`` returned
(a RunPod handler file is known only after its import).

Loading: a ``load(self, startup)`` that takes an argument is given the start-up's
:class:`~app.startup.StartupPhases` to report its phases on (``domain.ports.StartupReport``);
the controller, not this stage, enforces ``STARTUP_TIMEOUT``.

Slots: ``concurrency`` (the ``CONCURRENCY`` setting), or what the model's own
``concurrency(current)`` answers, asked between takes (the SDK's ``concurrency_modifier``),
kept between 1 and ``MAX_SLOTS``; the hook is asked off the controller's thread, with a deadline
(``app.concurrency_hook``).

What it promises: whatever ``load`` or ``run`` raises — ``Exception``, ``SystemExit``,
``KeyboardInterrupt``, ``GeneratorExit``, a bare ``BaseException``, an exception whose
``__str__`` raises — becomes that job's described, scrubbed error (``ModelDone``) or the load's
(``ModelLoaded``); nothing is raised into the worker. Tracebacks are dropped at once (a held one
keeps the failed call's tensors alive). A sync model that ignores its cancel check cannot be
stopped from Python: the controller gives up on it (``Action.ABANDON``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from app.concurrency_hook import ConcurrencyHook
from app.messages import Inbox, ModelDone, ModelLoaded
from app.startup import StartupPhases, accepts_report
from domain.errors import DeviceLost, ExecutionTimeout, JobCancelled
from domain.execution import RunningJob
from domain.job import Job
from domain.outputs import describe_error
from domain.ports import Clock, Model
from domain.scrubbing import Scrubber

log = logging.getLogger("podworker.model")

MAX_SLOTS = 1024
QUIET_ERRORS = (ValueError, LookupError, TypeError)  # the model's own input checks: no traceback

OnChunk = Callable[[Job, Any], None]


class ModelRunner:
    """Runs ``RunningJob``s on ``model``; reports each outcome on ``inbox``."""

    def __init__(
        self,
        model: Model,
        clock: Clock,
        inbox: Inbox,
        scrub: Callable[[str], str],
        *,
        concurrency: int = 1,
        on_chunk: OnChunk | None = None,
        aggregate: bool = False,
        startup: StartupPhases | None = None,
    ) -> None:
        self._model = model
        self.startup = startup or StartupPhases(clock)
        self._clock = clock
        self._inbox = inbox
        self._scrub = scrub
        self._concurrency = max(1, min(concurrency, MAX_SLOTS))
        self._on_chunk = on_chunk or (lambda job, chunk: None)
        self._aggregate = aggregate
        self._is_async = self._runs_async()
        self._threads = _Threads()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = self._concurrency
        modifier = getattr(model, "concurrency", None)
        self._hook = ConcurrencyHook(
            modifier, self._set_slots, clock=clock, scrub=scrub,
            current_slots=lambda: self._slots,
        ) if callable(modifier) else None

    # --- called by the controller ----------------------------------------------------------
    def start(self) -> None:
        """Load the model (on the thread or loop the jobs will use); reports ``ModelLoaded``."""
        if self._is_async or inspect.iscoroutinefunction(self._model.load):
            self._start_loop()
        self._threads.submit(self._load)

    def _start_loop(self) -> None:
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="model-loop", daemon=True).start()

    def _runs_async(self) -> bool:
        run = self._model.run
        return inspect.iscoroutinefunction(run) or inspect.isasyncgenfunction(run)

    @property
    def slots(self) -> int:
        """How many jobs may be on the model at once (as last asked)."""
        return self._slots

    def refresh_slots(self, current: int) -> None:
        """Ask the model's ``concurrency(current)``, when it has one (between takes), on a
        thread of its own: a hook that hangs never holds the caller (``ConcurrencyHook``)."""
        if self._hook is not None:
            self._hook.ask(current)

    def _set_slots(self, answer: int) -> None:
        self._slots = max(1, min(answer, MAX_SLOTS))

    def submit(self, running: RunningJob) -> None:
        """Run ``running`` (the controller makes sure a slot is free)."""
        if self._is_async:
            assert self._loop is not None
            asyncio.run_coroutine_threadsafe(self._run_async(running), self._loop)
        else:
            self._threads.submit(lambda: self._run_sync(running))

    def stop(self) -> None:
        self._threads.stop()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    # --- loading -----------------------------------------------------------------------------
    def _load(self) -> None:
        started = self._clock.now()
        self.startup.begin_load()

        def load() -> None:
            # a load(self, startup) is told the phases it goes through (domain.ports.Model)
            call: Callable[..., Any] = self._model.load
            args = (self.startup,) if accepts_report(call) else ()
            if inspect.iscoroutinefunction(call):
                assert self._loop is not None
                asyncio.run_coroutine_threadsafe(call(*args), self._loop).result()
            else:
                call(*args)

        error, _ = self._outcome_of(load)
        seconds = self._clock.now() - started
        if error is None:
            # a model may know how it runs only once loaded (a RunPod handler file, imported by
            # load): asked again here, before ModelLoaded lets the controller submit jobs
            if not self._is_async and self._runs_async():
                if self._loop is None:
                    self._start_loop()
                self._is_async = True
            log.info("model loaded", extra={"event": "model_loaded", "seconds": round(seconds, 3)})
            self.refresh_slots(0)
        else:
            log.error("model could not be loaded: %s", error, extra={"event": "model_load_failed"})
        self._inbox.put(ModelLoaded(error=error, seconds=seconds))

    # --- a plain ``def run`` -----------------------------------------------------------------
    def _run_sync(self, running: RunningJob) -> None:
        started = self._clock.now()
        result: dict[str, Any] = {}

        def call() -> None:
            output = self._model.run(running.job.input, running)
            if inspect.isgenerator(output):
                result["streamed"] = True
                output = self._stream(running, output)
            result["output"] = output
            if running.timed_out(self._clock.now()):  # finished past its deadline
                raise ExecutionTimeout(round(running.timeout_s * 1000))

        error, fatal = self._outcome_of(call, job=running.job)
        self._done(running, result, error, fatal, started)

    def _aggregates(self) -> bool:
        """Whether a stream's final output is its chunks: ``STREAM_AGGREGATE``, or the model's own
        ``aggregate_stream`` (a handler's ``return_aggregate_stream``)."""
        return self._aggregate or getattr(self._model, "aggregate_stream", False) is True

    def _stream(self, running: RunningJob, chunks: Iterator[Any]) -> Any:
        kept: list[Any] = []
        aggregate = self._aggregates()
        try:
            for chunk in chunks:
                self._on_chunk(running.job, chunk)
                if aggregate:
                    kept.append(chunk)
                running.check_cancelled()  # a stop or the timeout ends the stream here
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                close()
        return kept if aggregate else []  # the SDK sends an empty list too

    # --- an ``async def run`` ---------------------------------------------------------------
    async def _run_async(self, running: RunningJob) -> None:
        started = self._clock.now()
        result: dict[str, Any] = {}
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            running.on_cancel(lambda: loop.call_soon_threadsafe(task.cancel))
        error: str | None = None
        fatal = False
        try:
            async with asyncio.timeout(max(0.0, running.deadline - self._clock.now())) as limit:
                try:
                    output = self._model.run(running.job.input, running)
                    if inspect.isasyncgen(output):
                        result["streamed"] = True
                        result["output"] = await self._stream_async(running, output)
                    else:
                        result["output"] = await output
                except asyncio.CancelledError:
                    if running.cancel_reason is None:
                        raise  # the timeout's cancel: asyncio.timeout turns it into TimeoutError
                    raise JobCancelled(running.cancel_reason) from None
        except TimeoutError:
            if limit.expired():
                error = str(ExecutionTimeout(round(running.timeout_s * 1000)))
            else:
                error = self._scrub("TimeoutError")
        except BaseException as exc:
            error, fatal = self._described(exc, running.job)
        self._done(running, result, error, fatal, started)

    async def _stream_async(self, running: RunningJob, chunks: AsyncIterator[Any]) -> Any:
        kept: list[Any] = []
        aggregate = self._aggregates()
        try:
            async for chunk in chunks:
                self._on_chunk(running.job, chunk)
                if aggregate:
                    kept.append(chunk)
                running.check_cancelled()
        finally:
            aclose = getattr(chunks, "aclose", None)
            if callable(aclose):
                with contextlib.suppress(BaseException):
                    await aclose()
        return kept if aggregate else []  # the SDK sends an empty list too

    # --- outcomes ----------------------------------------------------------------------------
    def _done(self, running: RunningJob, result: dict[str, Any], error: str | None,
              fatal: bool, started: float) -> None:
        if error is not None and (job_secrets := running.job.secrets()):
            error = Scrubber(job_secrets)(error)  # the request's own credentials
        self._inbox.put(ModelDone(
            running=running, output=None if error else result.get("output"), error=error,
            seconds=self._clock.now() - started, device_lost=fatal,
            streamed=bool(result.get("streamed")),
            stopped=error is not None and running.cancel_reason is not None,
        ))

    def _outcome_of(
        self, call: Callable[[], object], job: Job | None = None
    ) -> tuple[str | None, bool]:
        """Run ``call``: (None, False) when it returned, else (its error described, whether the
        device is lost). Never raises."""
        try:
            call()
        except BaseException as exc:  # a model's SystemExit is its job's error, too
            return self._described(exc, job)
        return None, False

    def _described(self, exc: BaseException, job: Job | None) -> tuple[str, bool]:
        if not isinstance(exc, QUIET_ERRORS) and log.isEnabledFor(logging.DEBUG):
            with contextlib.suppress(BaseException):  # a hostile exception may break logging
                log.debug("model raised", exc_info=exc, extra={
                    "job_id": job.id if job else None, "_secrets": job.secrets() if job else ()})
        described = self._scrub(describe_error(exc))
        fatal = isinstance(exc, DeviceLost)
        if fatal:
            log.error("the accelerator is lost (%s); delivering what is held, then exiting so the "
                      "platform restarts the pod", described, extra={"event": "device_lost"})
        exc.__traceback__ = None  # frees the failed call's locals (tensors) now
        return described, fatal


class _Threads:
    """Daemon threads run submitted calls; a new one starts only when none is idle (so with one
    slot, everything runs on the first thread, "model")."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._count = 0

    def submit(self, call: Callable[[], None]) -> None:
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
            else:
                self._count += 1
                name = "model" if self._count == 1 else f"model-{self._count}"
                threading.Thread(target=self._serve, name=name, daemon=True).start()
        self._work.put(call)

    def stop(self) -> None:
        with self._lock:
            count = self._count
        for _ in range(count):
            self._work.put(None)

    def _serve(self) -> None:
        while True:
            call = self._work.get()
            if call is None:
                return
            call()
            with self._lock:
                self._idle += 1
