"""``HandlerModel``: a RunPod SDK handler as podworker's ``Model``.

Exists so that a handler written for ``runpod.serverless.start`` runs under podworker's own loop
(outbox, deadlines, heartbeat, job-stop, idle TTL, metrics) without a change. What it promises:

- ``load()`` runs the handler file (``handler_file.run_handler_file``): its import is the load;
- each job calls the handler with ``{"id": <job id>, "input": <input>}`` and the job's other
  fields as the platform gave them (``s3Config``, for ``rp_upload``), as the SDK does. How
  it runs follows the handler: a plain ``def`` on the worker's threads (``CONCURRENCY`` or the
  handler's ``concurrency_modifier`` of them: sync handlers really run side by side, where the
  SDK runs them one at a time on its event loop), ``async def`` as tasks on the worker's event
  loop, generators and async generators streamed chunk by chunk;
- ``runpod.serverless.progress_update(job, ...)`` reaches that job's progress;
- ``concurrency_modifier`` is asked between takes with the concurrency it last answered (it
  starts from 1, as in the SDK); ``return_aggregate_stream`` makes a stream's output its chunks;
- ``refresh_worker`` (in the config, or ``True`` in a returned dict) asks for a fresh worker once
  that job's result is delivered (``"stopPod": true``, this worker then drains and exits 7);
- what the handler returns or yields is read as the SDK reads it (``sdk_results``); an
  exception fails the job with a short ``<Type>: <message>`` and its traceback goes to the log
  (scrubbed of secrets by the worker's logging), where the SDK puts it in the job's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from adapters.runpod_handler.handler_file import HandlerConfig, run_handler_file
from adapters.runpod_handler.sdk_results import HandlerFailed, check_chunk, read_return
from domain.errors import ExecutionTimeout, JobCancelled, ModelError
from domain.job import secrets_in
from domain.ports import JobContext

log = logging.getLogger("podworker.handler")

RunFunction = Callable[[dict[str, Any], JobContext], Any]
_QUIET = (JobCancelled, ExecutionTimeout, HandlerFailed, asyncio.CancelledError, GeneratorExit)


class HandlerModel:
    """The handler file at ``path``, run with ``argv`` after it, as the worker's model."""

    def __init__(self, path: Path, argv: Sequence[str] = (), *, concurrency: int = 1) -> None:
        self._path = Path(path)
        self._argv = list(argv)
        self._default_concurrency = concurrency
        self._current = 1  # what concurrency_modifier is given, as in the SDK
        self._config: HandlerConfig | None = None
        self._contexts: dict[str, JobContext] = {}
        self._run: RunFunction = self._not_loaded
        self.aggregate_stream = False  # read by the model stage (return_aggregate_stream)

    @property
    def config(self) -> HandlerConfig | None:
        """What the handler's ``start()`` registered (None before ``load``)."""
        return self._config

    # --- the Model port -------------------------------------------------------------------
    def load(self) -> None:
        config = run_handler_file(self._path, self._argv, self._progress)
        self._config = config
        self.aggregate_stream = config.return_aggregate_stream
        handler = config.handler
        if inspect.isasyncgenfunction(handler):
            self._run = self._stream_async
        elif inspect.iscoroutinefunction(handler):
            self._run = self._call_async
        elif inspect.isgeneratorfunction(handler):
            self._run = self._stream
        else:
            self._run = self._call

    @property
    def run(self) -> RunFunction:
        """Run one job: a plain function, a coroutine function or a (async) generator function,
        as the handler is (known once loaded)."""
        return self._run

    def concurrency(self, current: int) -> int:
        """How many jobs at once: the handler's ``concurrency_modifier`` (given what it last
        answered), else ``CONCURRENCY``."""
        modifier = self._config.concurrency_modifier if self._config else None
        if modifier is None:
            return self._default_concurrency
        self._current = max(1, int(modifier(self._current)))
        return self._current

    # --- the four ways a handler runs -----------------------------------------------------
    def _not_loaded(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        raise ModelError("the handler file is not loaded")

    def _call(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        handler = self._handler()
        with self._running(ctx):
            try:
                value = handler(self._job(job_input, ctx))
                if inspect.isawaitable(value):  # a callable object with an async __call__
                    value = asyncio.run(_awaited(value))
            except BaseException as exc:
                self._raised(ctx, exc)
                raise
        return self._returned(value, ctx)

    async def _call_async(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        handler = self._handler()
        with self._running(ctx):
            try:
                value = await handler(self._job(job_input, ctx))
            except BaseException as exc:
                self._raised(ctx, exc)
                raise
        return self._returned(value, ctx)

    def _stream(self, job_input: dict[str, Any], ctx: JobContext) -> Iterator[Any]:
        handler = self._handler()
        with self._running(ctx):
            try:
                for chunk in handler(self._job(job_input, ctx)):
                    yield check_chunk(chunk)
            except BaseException as exc:
                self._raised(ctx, exc)
                raise
            finally:
                self._after(ctx)

    async def _stream_async(self, job_input: dict[str, Any], ctx: JobContext) -> AsyncIterator[Any]:
        handler = self._handler()
        with self._running(ctx):
            try:
                async for chunk in handler(self._job(job_input, ctx)):
                    yield check_chunk(chunk)
            except BaseException as exc:
                self._raised(ctx, exc)
                raise
            finally:
                self._after(ctx)

    # --- shared ------------------------------------------------------------------------------
    def _handler(self) -> Callable[..., Any]:
        if self._config is None:
            raise ModelError("the handler file is not loaded")
        return self._config.handler

    @staticmethod
    def _job(job_input: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        fields = getattr(ctx, "platform_fields", None) or {}
        return {**fields, "id": ctx.job_id, "input": job_input}

    @contextlib.contextmanager
    def _running(self, ctx: JobContext) -> Iterator[None]:
        """``ctx`` is where ``progress_update`` for this job id goes, while the handler runs."""
        self._contexts[ctx.job_id] = ctx
        try:
            yield
        finally:
            self._contexts.pop(ctx.job_id, None)

    def _progress(self, job: Any, progress: Any) -> None:
        job_id = job.get("id") if isinstance(job, dict) else None
        ctx = self._contexts.get(str(job_id)) if job_id is not None else None
        if ctx is None:
            log.warning("progress_update for a job this worker is not running (%r): dropped",
                        job_id, extra={"event": "progress_dropped"})
            return
        ctx.progress(progress)

    def _returned(self, value: Any, ctx: JobContext) -> Any:
        returned = read_return(value)
        if returned.fresh_worker:
            _ask_for_fresh_worker(ctx)
        self._after(ctx)
        if returned.error is not None:
            raise HandlerFailed(returned.error)
        return returned.output

    def _after(self, ctx: JobContext) -> None:
        if self._config is not None and self._config.refresh_worker:
            _ask_for_fresh_worker(ctx)

    def _raised(self, ctx: JobContext, exc: BaseException) -> None:
        """Log the handler's traceback (the SDK prints it; users debug with it)."""
        if isinstance(exc, _QUIET):
            return
        self._after(ctx)
        with contextlib.suppress(BaseException):  # a hostile exception may break logging
            log.error("the handler raised on job %s", ctx.job_id, exc_info=exc,
                      extra={"event": "handler_raised", "job_id": ctx.job_id,
                             "_secrets": secrets_in(getattr(ctx, "platform_fields", None) or {})})


def _ask_for_fresh_worker(ctx: JobContext) -> None:
    ask = getattr(ctx, "ask_for_fresh_worker", None)  # the worker's contexts offer it
    if callable(ask):
        ask()


async def _awaited(value: Any) -> Any:
    return await value
