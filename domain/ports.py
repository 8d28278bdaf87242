"""The ports: what the worker needs from the outside world, as ``typing.Protocol`` classes.

Adapters implement these without inheriting from them (a typed assignment in their tests shows
that they conform). Every method says what it promises, including which errors it raises; the
error classes are drawn in :mod:`domain.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from domain.job import Artifact, Job, JobResult
from domain.lifecycle import FailedStarts


class Clock(Protocol):
    """The only source of time. ``now()`` is monotonic seconds: only differences mean anything."""

    def now(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...


class JobApi(Protocol):
    """Where jobs come from and results go to (RunPod's webhook protocol, or a local fake)."""

    def take(self, *, job_in_progress: bool, max_jobs: int = 1) -> list[Job]:
        """Take up to ``max_jobs`` jobs, waiting up to the server's long-poll time.

        Returns an empty list when no job is available. Jobs whose envelope is malformed but
        whose id can be read come back with ``Job.problem`` set; payloads without a readable id
        are logged and dropped here. Raises ``TransientError`` (``ApiUnavailable``,
        ``RateLimited``) when the API could not be asked.
        """
        ...

    def post_result(self, result: JobResult) -> None:
        """Deliver one job's final result. Returns only once the API has accepted it.

        Raises ``TransientError`` when it should be tried again later (the caller keeps the
        result), ``RejectedByApi`` when the API refused it for good.
        """
        ...

    def post_stream(self, job_id: str, chunk: Any) -> None:
        """Deliver one streamed chunk of a running job's output, in order.

        Raises ``TransientError`` when it should be tried again (the caller keeps it and
        its job's later chunks and result behind it), ``RejectedByApi`` when refused for good.
        """
        ...

    def post_progress(self, job_id: str, progress: Any) -> None:
        """Send a progress update for a running job. Best effort: never raises."""
        ...

    def ping(self, job_ids: Sequence[str]) -> None:
        """Tell the platform this worker is alive and which jobs it holds. Never raises."""
        ...


class JobStopSource(Protocol):
    """The platform's requests to cancel running jobs."""

    def jobs_to_stop(self) -> list[str]:
        """Wait (long-poll) for job-stop requests; returns the ids to cancel, maybe none.

        Raises ``TransientError`` when the API could not be asked.
        """
        ...


class Storage(Protocol):
    """Where a job's binary outputs go (S3, a local folder, or inline data URLs)."""

    def store_all(
        self, job_id: str, artifacts: Sequence[Artifact], first_index: int = 0
    ) -> list[str]:
        """Store one job's outputs and return a reference for each (a URL or a path), in order.

        The outputs are numbered from ``first_index`` (a streaming job's chunks number theirs
        on). Output ``i`` always maps to the same place for a job, so storing again after a crash
        overwrites rather than duplicates. Returns only once every output is stored; raises
        ``UploadFailed`` (or ``TransientError``) when one could not be.
        """
        ...


class PodControl(Protocol):
    """Control over the pod this worker runs on."""

    def terminate(self) -> None:
        """Delete this pod (it stops billing). Raises ``TransientError`` or ``PermanentError``."""
        ...


class JobContext(Protocol):
    """What a model sees of the worker while it runs one job.

    The worker's context (``domain.execution.RunningJob``) also has ``ask_for_fresh_worker()``:
    the hook for a model that wants this worker replaced once the job is done (RunPod's
    ``refresh_worker``; a model that knows it leaks, or broke its state). The job's result is
    delivered as usual; the worker then takes no new job, finishes and delivers what it holds,
    and exits with code 7 (recycled) so the platform starts a fresh process; calling it twice is
    harmless. It is an optional capability, like ``Model.concurrency``, so that the many small
    contexts of tests and tools need not grow: code that may get another context looks it up
    (``getattr(ctx, "ask_for_fresh_worker", None)``).
    """

    @property
    def job_id(self) -> str:
        """The id of the job being run."""
        ...

    def check_cancelled(self) -> None:
        """Raise ``ExecutionTimeout`` or ``JobCancelled`` when the job must stop now.

        Models call it at every step they can stop at (each denoising step, say).
        """
        ...

    def progress(self, update: Any) -> None:
        """Report progress (any JSON value). Cheap; updates are coalesced and sent in order."""
        ...


class StartupReport(Protocol):
    """Where a model says which phase of its start-up it is in (see ``Model.load``).

    Each phase is timed, logged and shown by ``/health``, ``/metrics`` and ``doctor``; when the
    start fails or overruns ``STARTUP_TIMEOUT``, the phase it was in is what the user is told.
    """

    def phase(self, name: str) -> None:
        """Phase ``name`` begins now (the one before ends). The worker's names are ``import``
        (libraries), ``weights`` (read into memory), ``device`` (moved to the accelerator) and
        ``warmup`` (compile and warm-up); a model may use its own (lowercase letters, digits,
        ``_``, at most 32 characters; anything else is cleaned to that). A name used again adds
        to its time. Cheap, safe from any thread, never raises."""
        ...


class Model(Protocol):
    """The model the worker serves: loaded once, then run on each job's input.

    ``run`` may also be ``async def`` (run on the worker's event loop), a generator or an async
    generator (its yielded values are streamed), and a model may say which only once loaded
    (a RunPod handler file is known after its import); a model may define
    ``concurrency(current) -> int`` to say how many jobs it takes at once (asked between
    takes), and ``aggregate_stream = True`` to make a stream's final output its chunks."""

    def load(self) -> object:
        """Load weights and warm up. Called once, before the first job, on the thread (or the
        event loop, for ``async def load``) that runs the jobs. Raises ``ModelError``.

        A model that wants its phases timed takes one argument, ``load(self, startup)``
        (conventionally ``startup: StartupReport | None = None``), and calls
        ``startup.phase("weights")`` and so on as it goes; the worker passes it whenever
        ``load`` accepts a positional argument. Without it the whole load is one phase,
        ``load``. Either way the worker bounds it by ``STARTUP_TIMEOUT``, even when it ignores
        every signal: the worker does not wait for it to return.
        """
        ...

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        """Run one job and return its output (JSON values, with ``Artifact``s anywhere in it).

        Raises ``InvalidInput`` for bad input, ``ExecutionTimeout``/``JobCancelled`` (from
        ``ctx.check_cancelled()``), ``OutOfMemory``; any other exception is reported as the
        job's error by the worker.
        """
        ...


class ResultOutbox(Protocol):
    """Results written down before they are sent.

    Promises: a result ``put`` here survives a crash of the process (and of the machine, for the
    durable one) until ``remove`` is called for it.
    """

    def put(self, result: JobResult) -> None:
        """Keep ``result`` durably (replacing any earlier one for the same job)."""
        ...

    def put_all(self, results: Sequence[JobResult]) -> None:
        """Keep several results durably at once (one disk sync for all: a group commit)."""
        ...

    def remove(self, job_id: str) -> None:
        """Forget the result of ``job_id`` (it was delivered). Removing twice is harmless."""
        ...

    def pending(self) -> list[JobResult]:
        """Every result kept and not yet removed, oldest first."""
        ...


class RunMarks(Protocol):
    """Marks of jobs being run, so a job the process died on is reported at the next start.

    Promises: a ``started`` mark survives the process dying until ``finished`` clears it.
    """

    def started(self, job: Job) -> int:
        """Mark ``job`` as running; returns how many times it was started before (crashes)."""
        ...

    def finished(self, job_id: str) -> None:
        """Clear the running mark of ``job_id`` (its result is in the outbox or delivered)."""
        ...

    def abandoned(self, job_id: str) -> None:
        """Clear the running mark of a job that an earlier process crashed on, but keep its
        start count, so a job that keeps crashing the worker is recognised when it comes back."""
        ...

    def interrupted(self) -> list[tuple[str, int]]:
        """Jobs marked running by an earlier process that never finished: ``(id, starts)``."""
        ...


class StartHistory(Protocol):
    """Failed starts, kept across restarts (in ``STATE_DIR``), so that a worker in a crash loop
    says so.

    Promises: a failure recorded here survives the process dying, until a success resets it.
    """

    def failed_in_a_row(self) -> FailedStarts:
        """The starts that failed in a row before now (count 0 when the last one succeeded, or
        nothing is recorded, or the record cannot be read)."""
        ...

    def record_failure(self, phase: str, error: str) -> None:
        """One more failed start, in ``phase``, with ``error`` (already scrubbed). Never
        raises: a record that cannot be written is logged."""
        ...

    def record_success(self) -> None:
        """The model loaded: the count starts again from 0. Never raises."""
        ...


class MemoryGauge(Protocol):
    """The process's memory, read after each job to decide whether the worker must renew
    itself. Each reading is cheap (microseconds) and never raises."""

    def rss_bytes(self) -> int | None:
        """Resident memory of this process, in bytes; None when it cannot be read."""
        ...

    def vram_fraction(self) -> float | None:
        """The largest share (0-1) of any accelerator's memory that this process has allocated
        (tensors, not the allocator's cache); None without an accelerator in use."""
        ...
