"""The post stage: deliver streamed chunks and written-down results, in order, and progress.

It runs on its own thread ("post"). Its promises:

- everything is posted in the order it was handed over (a job's chunks before its result); an
  item the API does not accept (down, 5xx, 429, a trickling answer cut at its deadline) is
  retried on ``domain.waiting.RESULT_POST`` (0.2 s doubling to 30 s, for as long as it takes),
  holding the later items behind it; a stop request retries at once (``retry_now``);
- a result is in the outbox before it gets here and leaves it only once the API accepted it;
  then the controller is told (``Delivered``), which lets the idle TTL run and the process exit;
- a result the API refuses for good (a 4xx) is replaced by an error result saying why, so the
  job does not hang; a refused error result or chunk is given up on, with one error log line;
- a job the platform stopped gets no result (as RunPod's SDK does): ``forget`` drops what waits
  for it and tells the controller;
- progress updates are coalesced (only a job's latest waits), sent best effort, never after
  their job's final result, and not while posts are backing off.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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


@dataclass
class _Item:
    job_id: str
    result: JobResult | None = None  # None: a streamed chunk
    chunk: Any = None
    timings: Timings = field(default_factory=dict)


class Poster:
    """One thread posting chunks and results (with retries) and progress updates."""

    def __init__(
        self,
        *,
        job_api: JobApi,
        outbox: ResultOutbox,
        clock: Clock,
        metrics: Metrics,
        inbox: Inbox,
        scrub: Callable[[str], str],
        schedule: waiting.Schedule | None = None,
    ) -> None:
        self._api = job_api
        self._outbox = outbox
        self._clock = clock
        self._metrics = metrics
        self._inbox = inbox
        self._scrub = scrub
        self._backoff = waiting.Backoff(schedule or waiting.RESULT_POST)
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._progress: dict[str, Any] = {}
        self._progress_lock = threading.Lock()
        self._pending: collections.deque[_Item] = collections.deque()  # the post thread's own
        self._retry_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="post", daemon=True)

    # --- called from other threads ------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, result: JobResult, timings: Timings) -> None:
        self._queue.put(("item", _Item(result.job_id, result=result, timings=timings)))

    def stream(self, job_id: str, chunk: Any) -> None:
        self._queue.put(("item", _Item(job_id, chunk=chunk)))

    def forget(self, job_id: str) -> None:
        """The platform stopped ``job_id``: post nothing more for it."""
        self._queue.put(("forget", job_id))

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
        """Try what waits for a retry at once (used when stopping)."""
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
                kind, payload = self._queue.get(timeout=timeout)
            except queue.Empty:
                kind, payload = "retry", None
            if kind == "stop":
                return
            try:
                self._handle(kind, payload)
            except Exception:  # a bug here must not end the thread and strand results
                log.exception("post stage: unexpected error", extra={"event": "post_bug"})

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "item":
            if payload.result is not None:
                with self._progress_lock:
                    self._progress.pop(payload.job_id, None)  # never after the final result
            self._pending.append(payload)
            if self._retry_at is None:
                self._post_pending()
        elif kind == "retry":
            self._retry_at = None
            self._post_pending()
        elif kind == "forget":
            self._forget(payload)
        elif kind == "progress":
            with self._progress_lock:
                if payload not in self._progress:
                    return
                update = self._progress.pop(payload)
            if self._retry_at is None:
                self._api.post_progress(payload, update)

    def _post_pending(self) -> None:
        while self._pending:
            item = self._pending[0]
            started = self._clock.now()
            try:
                if item.result is None:
                    self._api.post_stream(item.job_id, item.chunk)
                else:
                    self._api.post_result(item.result)
            except RejectedByApi as exc:
                self._rejected(item, exc)
                continue
            except Exception as exc:  # TransientError, or an adapter bug: try again later
                if not isinstance(exc, TransientError):
                    log.exception("post failed unexpectedly", extra={"job_id": item.job_id})
                self._defer(item, exc)
                return
            self._pending.popleft()
            if item.result is not None:
                self._accepted(item.result, item.timings, self._clock.now() - started)
        self._backoff.succeeded()

    def _defer(self, item: _Item, exc: BaseException) -> None:
        delay = self._backoff.failed(getattr(exc, "retry_after", None))
        self._retry_at = self._clock.now() + delay
        self._metrics.count("result_post_retries")
        if self._backoff.failures == 1:
            log.warning(
                "post failed; kept and retried later: %s", self._scrub(describe_error(exc)),
                extra={"event": "result_deferred", "job_id": item.job_id},
            )

    def _accepted(self, result: JobResult, timings: Timings, post_s: float) -> None:
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

    def _rejected(self, item: _Item, exc: RejectedByApi) -> None:
        reason = self._scrub(describe_error(exc))
        log.error("job API rejected a post: %s", reason,
                  extra={"event": "result_rejected", "job_id": item.job_id})
        result = item.result
        if result is None or not result.ok:  # nothing more can be done: stop retrying it
            self._pending.popleft()
            if result is not None:
                self._accepted(result, item.timings, 0.0)
            return
        replacement = JobResult.failure(
            result.job_id, f"the job API rejected this job's result: {reason}"
        )
        try:
            self._outbox.put(replacement)
        except OSError as err:
            log.error("could not write the replacement result of %s down (%s)",
                      result.job_id, err.strerror or err, extra={"event": "outbox_write_failed"})
        item.result = replacement

    def _forget(self, job_id: str) -> None:
        self._pending = collections.deque(i for i in self._pending if i.job_id != job_id)
        with self._progress_lock:
            self._progress.pop(job_id, None)
        with contextlib.suppress(OSError):  # nothing of it should be there
            self._outbox.remove(job_id)
        log.info("job stopped by the platform: no result is posted for it",
                 extra={"event": "job_stopped", "job_id": job_id})
        self._inbox.put(Delivered(job_id, ok=False))
