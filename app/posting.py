"""The post stage: deliver written-down results to the job API, and progress updates.

It runs on its own thread ("post"). Its promises:

- results are posted in the order they were written down; one that the API does not accept
  (down, 5xx, 429, a trickling answer cut at its deadline) stays in the outbox and is retried
  on ``domain.waiting.RESULT_POST`` (0.2 s doubling to 30 s, for as long as it takes), oldest
  first; a stop request retries at once (``retry_now``);
- a result leaves the outbox only once the API accepted it; then the controller is told
  (``Delivered``), which is what lets the idle TTL run and the process exit;
- a result the API refuses for good (a 4xx) is replaced by an error result saying why, so the
  job does not hang; a refused error result is given up on, with one error log line;
- progress updates are coalesced (only a job's latest waits), sent best effort, never after
  their job's final result, and not while results are backing off.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

from app.messages import Delivered, Inbox
from app.metrics import Metrics
from domain import waiting
from domain.errors import RejectedByApi, TransientError
from domain.job import JobResult
from domain.outputs import describe_error
from domain.ports import Clock, JobApi, ResultOutbox

log = logging.getLogger("podworker.post")

Timings = dict[str, float]


class Poster:
    """One thread posting results (with retries) and progress updates."""

    def __init__(
        self,
        *,
        job_api: JobApi,
        outbox: ResultOutbox,
        clock: Clock,
        metrics: Metrics,
        inbox: Inbox,
        scrub: Callable[[str], str],
        schedule: waiting.Schedule = waiting.RESULT_POST,
    ) -> None:
        self._api = job_api
        self._outbox = outbox
        self._clock = clock
        self._metrics = metrics
        self._inbox = inbox
        self._scrub = scrub
        self._backoff = waiting.Backoff(schedule)
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._progress: dict[str, Any] = {}
        self._progress_lock = threading.Lock()
        # owned by the post thread:
        self._pending: collections.OrderedDict[str, tuple[JobResult, Timings]] = (
            collections.OrderedDict()
        )
        self._retry_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="post", daemon=True)

    # --- called from other threads ------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, result: JobResult, timings: Timings) -> None:
        self._queue.put(("result", (result, timings)))

    def resend(self, results: Iterable[JobResult]) -> None:
        """Results kept in the outbox by an earlier process."""
        for result in results:
            self.submit(result, {})

    def progress(self, job_id: str, update: Any) -> None:
        """Coalesce: only the latest update of a job waits to be sent."""
        with self._progress_lock:
            fresh = job_id not in self._progress
            self._progress[job_id] = update
        if fresh:
            self._queue.put(("progress", job_id))

    def retry_now(self) -> None:
        """Try the results waiting for a retry at once (used when stopping)."""
        self._queue.put(("retry", None))

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(("stop", None))
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- the post thread ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            timeout = None
            if self._retry_at is not None:
                timeout = max(0.0, self._retry_at - self._clock.now())
            try:
                kind, item = self._queue.get(timeout=timeout)
            except queue.Empty:
                kind, item = "retry", None
            if kind == "stop":
                return
            try:
                self._handle(kind, item)
            except Exception:  # a bug here must not end the thread and strand results
                log.exception("post stage: unexpected error", extra={"event": "post_bug"})

    def _handle(self, kind: str, item: Any) -> None:
        if kind == "result":
            result, timings = item
            with self._progress_lock:
                self._progress.pop(result.job_id, None)  # never after the final result
            self._pending[result.job_id] = (result, timings)
            if self._retry_at is None:
                self._post_pending()
        elif kind == "retry":
            self._retry_at = None
            self._post_pending()
        elif kind == "progress":
            with self._progress_lock:
                if item not in self._progress:
                    return
                update = self._progress.pop(item)
            if self._retry_at is None and item not in self._pending:
                self._api.post_progress(item, update)

    def _post_pending(self) -> None:
        while self._pending:
            job_id, (result, timings) = next(iter(self._pending.items()))
            started = self._clock.now()
            try:
                self._api.post_result(result)
            except RejectedByApi as exc:
                self._rejected(result, timings, exc)
                continue
            except Exception as exc:  # TransientError, or an adapter bug: try again later
                if not isinstance(exc, TransientError):
                    log.exception("result post failed unexpectedly", extra={"job_id": job_id})
                self._defer(result, exc)
                return
            self._accepted(result, timings, self._clock.now() - started)
        self._backoff.succeeded()

    def _defer(self, result: JobResult, exc: BaseException) -> None:
        delay = self._backoff.failed(getattr(exc, "retry_after", None))
        self._retry_at = self._clock.now() + delay
        self._metrics.count("result_post_retries")
        if self._backoff.failures == 1:
            log.warning(
                "result post failed; kept in the outbox and retried later: %s",
                self._scrub(describe_error(exc)),
                extra={"event": "result_deferred", "job_id": result.job_id},
            )

    def _accepted(self, result: JobResult, timings: Timings, post_s: float) -> None:
        del self._pending[result.job_id]
        try:
            self._outbox.remove(result.job_id)
        except OSError as exc:  # at worst it is sent again at the next start
            log.error("could not clear the delivered result of %s from the outbox (%s)",
                      result.job_id, exc.strerror or exc, extra={"event": "outbox_write_failed"})
        self._metrics.observe("post", post_s)
        self._metrics.count("jobs_done" if result.ok else "jobs_failed")
        log.info("result delivered", extra={"event": "result_delivered", "job_id": result.job_id,
                                            "ok": result.ok, **timings,
                                            "post_s": round(post_s, 4)})
        if not result.ok:
            log.info("job failed: %s", result.error,
                     extra={"event": "job_failed", "job_id": result.job_id})
        self._inbox.put(Delivered(result.job_id, result.ok))

    def _rejected(self, result: JobResult, timings: Timings, exc: RejectedByApi) -> None:
        reason = self._scrub(describe_error(exc))
        log.error("job API rejected the result: %s", reason,
                  extra={"event": "result_rejected", "job_id": result.job_id})
        if not result.ok:  # nothing more can be done: stop retrying it
            self._accepted(result, timings, 0.0)
            return
        replacement = JobResult.failure(
            result.job_id, f"the job API rejected this job's result: {reason}"
        )
        try:
            self._outbox.put(replacement)
        except OSError as err:
            log.error("could not write the replacement result of %s down (%s)",
                      result.job_id, err.strerror or err, extra={"event": "outbox_write_failed"})
        self._pending[result.job_id] = (replacement, timings)
        self._pending.move_to_end(result.job_id, last=False)
