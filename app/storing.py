"""The store stage: turn a finished job into its result and write it down, at once.

It runs on its own thread ("store"), beside the model, so job N's uploads overlap job N+1's
model time. Its promises:

- a job's outputs (``Artifact``s anywhere in the output) are stored through the ``Storage`` port
  and replaced by their references; an output that is not JSON, a result larger than the job
  API accepts, or a failed upload becomes that job's error result, saying what to do;
- **uploads never hold another job's result**: outputs are stored on ``STORE_PARALLEL``
  threads ("store-upload"), up to that many jobs at once, while the store thread goes on
  writing down results that need no storage; a hung upload (it ends by the storage's own
  deadline) holds only its own job. A job's chunks and result keep their order: what comes
  after an item being stored waits for it;
- **the result is written down (``ResultOutbox.put``, durable) as soon as it exists**, then the
  job's running mark is cleared, and only then is it handed to the post stage: results never
  wait in memory behind another result's post retries, so a crash can only ever re-post one;
- a streamed chunk is checked like a final output (JSON, no NaN, at most ``max_result_bytes``
  on the wire): a chunk that can never be posted is not posted, the job's later chunks are
  dropped, and its result becomes an error naming the chunk, so the post queue never holds
  what it cannot send;
- a full or broken disk does not cost the result: it is logged and handed on anyway.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.metrics import Metrics
from app.posting import Poster, Timings
from domain.errors import PermanentError, TransientError
from domain.job import Job, JobResult
from domain.outputs import (
    describe_error,
    encode_json,
    ensure_json,
    find_artifacts,
    replace_artifacts,
)
from domain.ports import Clock, ResultOutbox, RunMarks, Storage

log = logging.getLogger("podworker.store")


@dataclass(frozen=True)
class Outcome:
    """A job the worker is done with: the model's output or error, or a result decided without
    the model (``decided``: bad input, cancelled, poison guard, abandoned)."""

    job: Job
    output: Any = None
    error: str | None = None
    decided: JobResult | None = None
    model_seconds: float = 0.0
    streamed: bool = False  # its output was streamed in chunks before this final result
    stopped: bool = False  # the platform stopped it: no result is posted (as the SDK does)
    stop_pod: bool = False  # the model asked for a fresh worker after it (refresh_worker)


GROUP_COMMIT_MAX = 64
"""Most results written down with one disk sync."""
STORE_PARALLEL = 4
"""Jobs whose outputs are stored at once (each by the storage's own deadline)."""


def _needs_storage(item: Outcome | Chunk) -> bool:
    value = item.value if isinstance(item, Chunk) else item.output
    return bool(find_artifacts(value))


@dataclass(frozen=True)
class Chunk:
    """One value a streaming model yielded, to be stored and posted before its job's result."""

    job: Job
    value: Any


@dataclass(frozen=True)
class _Stored:
    """An item whose outputs were stored off the store thread: the result (``Outcome``) or the
    chunk's value with references (``Chunk``; None when it could not be stored)."""

    item: Outcome | Chunk
    result: JobResult | None = None
    value: Any = None
    seconds: float = 0.0


class Storer:
    """One thread turning ``Outcome``s into written-down results for the ``Poster``."""

    def __init__(
        self,
        *,
        storage: Storage,
        outbox: ResultOutbox,
        marks: RunMarks,
        poster: Poster,
        clock: Clock,
        metrics: Metrics,
        max_result_bytes: int,
        scrub: Callable[[str], str],
    ) -> None:
        self._storage = storage
        self._outbox = outbox
        self._marks = marks
        self._poster = poster
        self._clock = clock
        self._metrics = metrics
        self._max_result_bytes = max_result_bytes
        self._scrub = scrub
        self._queue: queue.SimpleQueue[Outcome | Chunk | _Stored | None] = queue.SimpleQueue()
        self._stored: dict[str, int] = {}  # per streaming job: outputs stored so far
        # the store thread's own: per job with an item being stored, what waits behind it
        self._behind: dict[str, collections.deque[Outcome | Chunk]] = {}
        self._broken_streams: dict[str, str] = {}  # job id -> why its stream was cut
        self._uploads: queue.SimpleQueue[Outcome | Chunk] = queue.SimpleQueue()
        self._upload_threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._run, name="store", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, outcome: Outcome) -> None:
        self._queue.put(outcome)

    def stream(self, job: Job, value: Any) -> None:
        """A streamed chunk (called from the model's thread, in order)."""
        self._queue.put(Chunk(job, value))

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        """Handle what is queued; results found together are written down together (one disk
        sync for all), never held back behind any job's uploads (they run on other threads)."""
        while True:
            item: Outcome | Chunk | _Stored | None = self._queue.get()
            batch: list[tuple[JobResult, Timings]] = []
            while item is not None:
                self._dispatch(item, batch)
                if len(batch) >= GROUP_COMMIT_MAX:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._write_down(batch)
            if item is None:
                return

    def _dispatch(self, item: Outcome | Chunk | _Stored,
                  batch: list[tuple[JobResult, Timings]]) -> None:
        """An item arrives (or comes back stored): handle it here, hand it to an upload
        thread, or queue it behind its job's item being stored."""
        if isinstance(item, _Stored):
            self._handle(item.item, batch, item)
            job_id = item.item.job.id
            waiting = self._behind.pop(job_id)
            while waiting:  # what came after it, in order, until the next that needs storage
                following = waiting.popleft()
                if self._starts_upload(following):
                    self._behind[job_id] = waiting
                    return
                self._handle(following, batch)
            return
        if item.job.id in self._behind:
            self._behind[item.job.id].append(item)
        elif not self._starts_upload(item):
            self._handle(item, batch)

    def _starts_upload(self, item: Outcome | Chunk) -> bool:
        """Hand ``item`` to an upload thread when it has outputs to store."""
        if not _needs_storage(item) or item.job.id in self._broken_streams:
            return False
        self._behind[item.job.id] = collections.deque()
        if len(self._upload_threads) < STORE_PARALLEL:
            thread = threading.Thread(target=self._upload, name="store-upload", daemon=True)
            self._upload_threads.append(thread)
            thread.start()
        self._uploads.put(item)
        return True

    def _upload(self) -> None:
        """An upload thread: store one item's outputs, hand it back to the store thread."""
        while True:
            item = self._uploads.get()
            started = self._clock.now()
            try:
                if isinstance(item, Chunk):
                    stored = _Stored(item, value=self._chunk_references(item))
                else:
                    stored = _Stored(item, result=self._store_outputs(item.job, item.output))
            except Exception:  # a bug here must not strand the job: its result says so
                log.exception("store stage: unexpected error", extra={"event": "store_bug"})
                stored = _Stored(item, result=JobResult.failure(
                    item.job.id, "internal error while storing the result"))
            self._queue.put(dataclasses.replace(stored, seconds=self._clock.now() - started))

    def _handle(self, item: Outcome | Chunk, batch: list[tuple[JobResult, Timings]],
                stored: _Stored | None = None) -> None:
        try:
            if isinstance(item, Chunk):
                self._chunk(item, stored)
            else:
                self._finish(item, batch, stored)
        except Exception:  # a bug here must not end the thread and strand results
            log.exception("store stage: unexpected error", extra={"event": "store_bug"})
            if isinstance(item, Outcome):
                batch.append((JobResult.failure(
                    item.job.id, "internal error while storing the result"), {}))

    def _chunk_references(self, chunk: Chunk) -> Any:
        """The chunk's value with its artifacts stored, or None when they could not be."""
        job_id = chunk.job.id
        try:
            return self._with_references(job_id, chunk.value)
        except (PermanentError, TransientError) as exc:
            log.error("a streamed chunk of job %s was not stored: %s", job_id,
                      self._scrub(describe_error(exc)), extra={"event": "chunk_not_stored"})
            return None

    def _chunk(self, chunk: Chunk, stored: _Stored | None = None) -> None:
        job_id = chunk.job.id
        if job_id in self._broken_streams:
            return  # after a chunk that could not be sent, the stream is cut
        if stored is not None:
            if stored.value is None:
                return
            value = stored.value
        else:
            value = chunk.value
        problem = self._unsendable(value)
        if problem is not None:
            self._chunk_refused(job_id, problem)
            return
        self._poster.stream(job_id, value)

    def _unsendable(self, value: Any) -> str | None:
        """Why a chunk can never be posted (not JSON, NaN, over the size limit), or None."""
        try:
            text = encode_json(value)
        except PermanentError as exc:
            return describe_error(exc)
        size = len(text.encode("utf-8", "surrogatepass")) + len('{"output":}')
        if size > self._max_result_bytes:
            return (f"it is {size} bytes, over the job API's limit of "
                    f"{self._max_result_bytes} bytes")
        return None

    def _chunk_refused(self, job_id: str, problem: str) -> None:
        reason = self._scrub(f"a streamed chunk could not be sent: {problem}")
        log.error("job %s: %s; its stream ends here and the job fails", job_id, reason,
                  extra={"event": "chunk_refused", "job_id": job_id})
        self._broken_streams[job_id] = reason

    def _finish(self, outcome: Outcome, batch: list[tuple[JobResult, Timings]],
                stored: _Stored | None = None) -> None:
        job = outcome.job
        started = self._clock.now()
        broken = self._broken_streams.pop(job.id, None)
        if outcome.stopped:
            self._stored.pop(job.id, None)
            with contextlib.suppress(OSError):  # at worst reported as interrupted at restart
                self._marks.finished(job.id)
            self._poster.forget(job.id)
            return
        if outcome.decided is not None:
            result = outcome.decided
        elif outcome.error is not None:
            result = JobResult.failure(job.id, self._scrub(outcome.error))
        elif broken is not None:
            result = JobResult.failure(job.id, broken)
        else:
            if stored is not None and stored.result is not None:
                result = stored.result
                started -= stored.seconds
            else:
                result = self._store_outputs(job, outcome.output)
            self._metrics.observe("model", outcome.model_seconds)
        if outcome.streamed or outcome.stop_pod:
            result = dataclasses.replace(result, streamed=outcome.streamed,
                                         stop_pod=outcome.stop_pod)
        self._stored.pop(job.id, None)
        result = self._enforce_size(result)
        store_s = self._clock.now() - started
        self._metrics.observe("store", store_s)
        timings = {
            "model_s": round(outcome.model_seconds, 4),
            "store_s": round(store_s, 4),
            "queued_s": round(max(0.0, started - job.taken_at - outcome.model_seconds), 4),
        }
        batch.append((result, timings))

    def _write_down(self, batch: list[tuple[JobResult, Timings]]) -> None:
        """Keep the results durably, clear their jobs' running marks, hand them to the post
        stage. A full or broken disk must not cost a result: it is then posted anyway."""
        if not batch:
            return
        try:
            self._outbox.put_all([result for result, _ in batch])
            for result, _ in batch:
                self._marks.finished(result.job_id)
        except OSError as exc:
            log.error("could not write %d result(s) down (%s); posting them anyway", len(batch),
                      exc.strerror or exc, extra={"event": "outbox_write_failed"})
        for result, timings in batch:
            self._poster.submit(result, timings)
        batch.clear()

    def _store_outputs(self, job: Job, output: Any) -> JobResult:
        try:
            output = self._with_references(job.id, output)
            ensure_json(output)
        except (PermanentError, TransientError) as exc:
            return JobResult.failure(job.id, self._scrub(describe_error(exc)))
        except Exception as exc:
            log.exception("storing outputs failed", extra={"job_id": job.id})
            return JobResult.failure(
                job.id, self._scrub(f"storing outputs failed: {describe_error(exc)}")
            )
        return JobResult.success(job.id, output)

    def _with_references(self, job_id: str, value: Any) -> Any:
        """``value`` with its artifacts stored (numbered on from the job's earlier chunks) and
        replaced by their references."""
        artifacts = find_artifacts(value)
        if not artifacts:
            return value
        first = self._stored.get(job_id, 0)
        references = self._storage.store_all(job_id, artifacts, first)
        self._stored[job_id] = first + len(artifacts)
        return replace_artifacts(value, [str(ref) for ref in references])

    def _enforce_size(self, result: JobResult) -> JobResult:
        size = result.wire_size()
        if size <= self._max_result_bytes:
            return result
        return JobResult(
            result.job_id, streamed=result.streamed, stop_pod=result.stop_pod,
            error=f"result is {size} bytes, over the job API's limit of {self._max_result_bytes} "
            "bytes: configure a bucket (BUCKET_ENDPOINT_URL, BUCKET_NAME, ...) so outputs are "
            "uploaded instead of sent inline",
        )
