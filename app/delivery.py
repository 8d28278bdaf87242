"""The delivery stage: store a finished job's outputs, write its result down, post it.

It runs on its own thread, beside the model, so job N's uploads and result post overlap job
N+1's model time. Its promises:

- every result is in the outbox (durable) before it is posted, and leaves the outbox only once
  the job API has accepted it; a post that outlives every retry stays there and is sent again
  later (with backoff), also after a restart;
- a job's progress updates are sent in order and never after its final result;
- a result too large for the job API, an output that is not JSON, or a failed upload becomes
  that job's error result, saying what to do;
- ``undelivered`` counts every result produced and not yet accepted, which is what the
  lifecycle policy reads before it lets the pod terminate or the process exit.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters.retrying import Backoff
from app.metrics import Metrics
from domain.errors import PermanentError, RejectedByApi, TransientError
from domain.job import Artifact, Job, JobResult
from domain.outputs import describe_error, ensure_json, find_artifacts, replace_artifacts
from domain.ports import Clock, JobApi, Outbox, Storage

log = logging.getLogger("podworker.delivery")


@dataclass(frozen=True)
class Finished:
    """What the model stage hands over: a job and its raw output, or the exception it raised."""

    job: Job
    output: Any = None
    error: BaseException | None = None
    model_seconds: float = 0.0


class Delivery:
    """One thread that turns ``Finished`` jobs into delivered results."""

    def __init__(
        self,
        *,
        job_api: JobApi,
        storage: Storage,
        outbox: Outbox,
        clock: Clock,
        metrics: Metrics,
        max_result_bytes: int,
        redact: Callable[[str], str] = lambda text: text,
        retry_backoff: Backoff | None = None,
    ) -> None:
        self._api = job_api
        self._storage = storage
        self._outbox = outbox
        self._clock = clock
        self._metrics = metrics
        self._max_result_bytes = max_result_bytes
        self._redact = redact
        self._backoff = retry_backoff or Backoff(initial=1.0, maximum=30.0)
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._progress: dict[str, Any] = {}
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._pending: dict[str, JobResult] = {}  # in the outbox, post failed: retry later
        self._timings: dict[str, dict[str, float]] = {}  # per job, for the delivered log line
        self._retry_at: float | None = None
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.on_delivered: Callable[[JobResult], None] = lambda result: None

    # --- called from other threads ------------------------------------------------------
    def start(self) -> None:
        """Queue what an earlier process left in the outbox, then start the thread."""
        for result in self._outbox.pending():
            with self._lock:
                self._in_flight[result.job_id] += 1
            self._queue.put(("resend", result))
        self._thread = threading.Thread(target=self._run, name="delivery", daemon=True)
        self._thread.start()

    def submit(self, finished: Finished) -> None:
        with self._lock:
            self._in_flight[finished.job.id] += 1
        self._queue.put(("finished", finished))

    def submit_result(self, job: Job, result: JobResult) -> None:
        """Deliver a result decided without the model (bad envelope, poison job, restart)."""
        self.submit(Finished(job=job, output=result))

    def progress(self, job_id: str, update: Any) -> None:
        """Coalesce: only the latest update of a job waits to be sent."""
        with self._lock:
            fresh = job_id not in self._progress
            self._progress[job_id] = update
        if fresh:
            self._queue.put(("progress", job_id))

    @property
    def undelivered(self) -> int:
        with self._lock:
            return sum(self._in_flight.values())

    def in_flight_ids(self) -> list[str]:
        with self._lock:
            return [job_id for job_id, count in self._in_flight.items() if count > 0]

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is undelivered, or ``timeout`` seconds pass; True when idle."""
        with self._idle:
            return self._idle.wait_for(lambda: sum(self._in_flight.values()) == 0, timeout)

    def retry_now(self) -> None:
        """Try the pending results again at once (used when stopping)."""
        with self._lock:
            self._retry_at = self._clock.now() if self._pending else None
        self._queue.put(("wake", None))

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(("stop", None))
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the delivery thread ------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                kind, item = self._queue.get(timeout=self._seconds_to_retry())
            except queue.Empty:
                self._retry_pending()
                continue
            if kind == "stop":
                return
            try:
                if kind == "finished":
                    self._deliver_finished(item)
                elif kind == "resend":
                    self._post(item)
                elif kind == "progress":
                    self._send_progress(item)
            except Exception:  # a bug here must not end the thread and strand results
                log.exception("delivery: unexpected error", extra={"event": "delivery_bug"})
            if self._retry_at is not None and self._clock.now() >= self._retry_at:
                self._retry_pending()

    def _seconds_to_retry(self) -> float | None:
        with self._lock:
            if self._retry_at is None:
                return None
            return max(0.0, self._retry_at - self._clock.now())

    def _send_progress(self, job_id: str) -> None:
        with self._lock:
            if job_id not in self._progress:
                return  # its final result went first; progress is dropped
            update = self._progress.pop(job_id)
        self._api.post_progress(job_id, update)

    def _deliver_finished(self, finished: Finished) -> None:
        job = finished.job
        with self._lock:
            self._progress.pop(job.id, None)
        started = self._clock.now()
        if isinstance(finished.output, JobResult):
            result = finished.output
        elif finished.error is not None:
            result = JobResult.failure(job.id, self._redact(describe_error(finished.error)))
        else:
            result = self._store_outputs(job, finished.output)
        result = self._enforce_size(result)
        store_s = self._clock.now() - started
        self._metrics.observe("store", store_s)
        if not isinstance(finished.output, JobResult):  # the model ran
            self._metrics.observe("model", finished.model_seconds)
        self._write_down(result, job.id)
        self._timings[job.id] = {
            "model_s": round(finished.model_seconds, 4),
            "store_s": round(store_s, 4),
            "queued_s": round(max(0.0, started - job.taken_at - finished.model_seconds), 4),
        }
        self._post(result)

    def _write_down(self, result: JobResult, job_id: str) -> None:
        """Keep the result in the outbox before posting. A full or broken disk must not cost
        the result: it is then posted anyway (and kept in memory if the post fails)."""
        try:
            self._outbox.put(result)
            self._outbox.finished(job_id)
        except OSError as exc:
            log.error("could not write the result of %s down (%s); posting it anyway",
                      job_id, exc.strerror or exc, extra={"event": "outbox_write_failed"})

    def _store_outputs(self, job: Job, output: Any) -> JobResult:
        try:
            artifacts = find_artifacts(output)
            references = self._store_all(job.id, artifacts) if artifacts else []
            output = replace_artifacts(output, references)
            ensure_json(output)
        except (PermanentError, TransientError) as exc:
            return JobResult.failure(job.id, self._redact(describe_error(exc)))
        except Exception as exc:
            log.exception("storing outputs failed", extra={"job_id": job.id})
            return JobResult.failure(job.id, self._redact(f"storing outputs failed: {exc}"))
        return JobResult.success(job.id, output)

    def _store_all(self, job_id: str, artifacts: list[Artifact]) -> list[str]:
        store_many = getattr(self._storage, "store_many", None)
        if callable(store_many):
            refs = store_many(job_id, artifacts)
            return [str(ref) for ref in refs]
        return [self._storage.store(job_id, i, a) for i, a in enumerate(artifacts)]

    def _enforce_size(self, result: JobResult) -> JobResult:
        size = result.wire_size()
        if size <= self._max_result_bytes:
            return result
        return JobResult.failure(
            result.job_id,
            f"result is {size} bytes, over the job API's limit of {self._max_result_bytes} "
            "bytes: configure a bucket (BUCKET_ENDPOINT_URL, BUCKET_NAME, ...) so outputs are "
            "uploaded instead of sent inline",
        )

    def _post(self, result: JobResult) -> None:
        started = self._clock.now()
        try:
            self._api.post_result(result)
        except TransientError as exc:
            self._keep_for_later(result, exc)
            return
        except RejectedByApi as exc:
            self._rejected(result, exc)
            return
        except Exception as exc:  # an adapter bug: keep the result, try again later
            log.exception("result post failed unexpectedly", extra={"job_id": result.job_id})
            self._keep_for_later(result, exc)
            return
        post_s = self._clock.now() - started
        self._metrics.observe("post", post_s)
        self._accepted(result, post_s)

    def _accepted(self, result: JobResult, post_s: float = 0.0) -> None:
        try:
            self._outbox.remove(result.job_id)
        except OSError as exc:  # at worst it is sent again at the next start
            log.error("could not clear the delivered result of %s from the outbox (%s)",
                      result.job_id, exc.strerror or exc, extra={"event": "outbox_write_failed"})
        self._metrics.count("jobs_done" if result.ok else "jobs_failed")
        with self._lock:
            self._pending.pop(result.job_id, None)
            self._in_flight[result.job_id] -= 1
            if self._in_flight[result.job_id] <= 0:
                del self._in_flight[result.job_id]
            if not self._pending:
                self._retry_at = None
                self._backoff.reset()
            self._idle.notify_all()
        timings = self._timings.pop(result.job_id, {})
        log.info(
            "result delivered",
            extra={"event": "result_delivered", "job_id": result.job_id, "ok": result.ok,
                   **timings, "post_s": round(post_s, 4)},
        )
        if not result.ok:
            log.info("job failed: %s", result.error,
                     extra={"event": "job_failed", "job_id": result.job_id})
        self.on_delivered(result)

    def _keep_for_later(self, result: JobResult, exc: BaseException) -> None:
        with self._lock:
            first = not self._pending
            self._pending[result.job_id] = result
            if self._retry_at is None:
                self._retry_at = self._clock.now() + self._backoff.next_delay()
        self._metrics.count("result_post_retries")
        if first:
            log.warning(
                "result post failed; kept in the outbox and retried later: %s",
                self._redact(describe_error(exc)),
                extra={"event": "result_deferred", "job_id": result.job_id},
            )

    def _rejected(self, result: JobResult, exc: RejectedByApi) -> None:
        reason = self._redact(describe_error(exc))
        log.error(
            "job API rejected the result: %s",
            reason,
            extra={"event": "result_rejected", "job_id": result.job_id},
        )
        if result.ok:  # tell the user why instead of leaving the job hanging
            replacement = JobResult.failure(
                result.job_id, f"the job API rejected this job's result: {reason}"
            )
            self._write_down(replacement, result.job_id)
            self._post(replacement)
            return
        self._accepted(result)  # nothing more can be done: stop retrying it

    def _retry_pending(self) -> None:
        with self._lock:
            batch = list(self._pending.values())
            self._pending.clear()
            self._retry_at = None
        for number, result in enumerate(batch):
            self._post(result)
            with self._lock:
                failed_again = result.job_id in self._pending
            if failed_again:  # the API is still down: leave the rest for the next round
                with self._lock:
                    for rest in batch[number + 1 :]:
                        self._pending.setdefault(rest.job_id, rest)
                return
