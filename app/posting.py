"""The post stage: deliver streamed chunks and written-down results, in order, and progress.

It runs on ``lanes`` threads ("post"), each job always on the same one, so a job API that takes
20 ms to accept a result (a real one, not on loopback) is not one post at a time. Its promises:

- a job's items are posted in the order they were handed over (its chunks before its result);
  an item the API does not accept (down, 5xx, 429, a trickling answer cut at its deadline) is
  retried on ``domain.waiting.RESULT_POST`` (0.2 s doubling to 30 s, for as long as it takes,
  the lanes backing off together), holding its own job's later items behind it; other jobs'
  items in its lane go first at the next try (a result the API fails for ever, alone, delays
  the others by a backoff, never stalls them); a stop request retries at once
  (``retry_now``);
- a result is in the outbox before it gets here and leaves it only once the API accepted it;
  then the controller is told (``Delivered``), which lets the idle TTL run and the process exit;
- a result the API refuses for good (a 4xx) is replaced by an error result saying why, so the
  job does not hang; a refused error result or chunk is given up on, with one error log line;
- **an item that can never be posted** (the adapter raises something other than
  ``TransientError``: a value the wire cannot carry, an adapter bug) is not retried: a chunk is
  dropped and its job's result becomes an error saying why, a result is replaced by such an
  error; the lane goes on with its next item, never wedged;
- a job the platform stopped gets no result (as RunPod's SDK does): ``forget`` drops what waits
  for it and tells the controller;
- progress updates are coalesced (only a job's latest waits), sent best effort, never after
  their job's final result, and not while its lane is backing off.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
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
MAX_LANES = 8
"""Most posts in flight at once (bootstrap uses one lane per model slot, up to this)."""


@dataclass
class _Item:
    job_id: str
    result: JobResult | None = None  # None: a streamed chunk
    chunk: Any = None
    timings: Timings = field(default_factory=dict)


class _SharedBackoff:
    """One backoff for every lane: the API is down for all of them at once. The wait grows once
    per round, not once per lane: a lane that fails before the current wait is over waits out
    what is left of it, so 8 lanes failing together wait 0.2 s, not up to 26 s."""

    def __init__(self, schedule: waiting.Schedule, clock: Clock) -> None:
        self._backoff = waiting.Backoff(schedule)
        self._clock = clock
        self._lock = threading.Lock()
        self._retry_at = 0.0

    def failed(self, retry_after: float | None) -> tuple[float, bool]:
        """The wait after this failure, and whether it is the first of a run of failures."""
        with self._lock:
            now = self._clock.now()
            if now < self._retry_at:
                return self._retry_at - now, False
            delay = self._backoff.failed(retry_after)
            self._retry_at = now + delay
            return delay, self._backoff.failures == 1

    def succeeded(self) -> None:
        with self._lock:
            self._backoff.succeeded()
            self._retry_at = 0.0


class Poster:
    """Posts chunks and results (with retries) and progress updates, on ``lanes`` threads."""

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
        lanes: int = 1,
    ) -> None:
        backoff = _SharedBackoff(schedule or waiting.RESULT_POST, clock)
        self._lanes = [
            _Lane(job_api=job_api, outbox=outbox, clock=clock, metrics=metrics, inbox=inbox,
                  scrub=scrub, backoff=backoff)
            for _ in range(max(1, min(lanes, MAX_LANES)))
        ]

    def _lane(self, job_id: str) -> _Lane:
        return self._lanes[hash(job_id) % len(self._lanes)]

    # --- called from other threads ------------------------------------------------------
    def start(self) -> None:
        for lane in self._lanes:
            lane.start()

    def submit(self, result: JobResult, timings: Timings) -> None:
        self._lane(result.job_id).put("item", _Item(result.job_id, result=result,
                                                    timings=timings))

    def stream(self, job_id: str, chunk: Any) -> None:
        self._lane(job_id).put("item", _Item(job_id, chunk=chunk))

    def forget(self, job_id: str) -> None:
        """The platform stopped ``job_id``: post nothing more for it."""
        self._lane(job_id).put("forget", job_id)

    def resend(self, results: Iterable[JobResult]) -> None:
        """Results kept in the outbox by an earlier process."""
        for result in results:
            self.submit(result, {})

    def progress(self, job_id: str, update: Any) -> None:
        """Coalesce: only the latest update of a job waits to be sent."""
        self._lane(job_id).progress(job_id, update)

    def retry_now(self) -> None:
        """Try what waits for a retry at once (used when stopping)."""
        for lane in self._lanes:
            lane.put("retry", None)

    def stop(self, timeout: float = 5.0) -> None:
        for lane in self._lanes:
            lane.put("stop", None)
        for lane in self._lanes:
            lane.join(timeout)


class _Lane:
    """One thread posting its jobs' items in order (the stage as it was with one thread)."""

    def __init__(self, *, job_api: JobApi, outbox: ResultOutbox, clock: Clock,
                 metrics: Metrics, inbox: Inbox, scrub: Callable[[str], str],
                 backoff: _SharedBackoff) -> None:
        self._api = job_api
        self._outbox = outbox
        self._clock = clock
        self._metrics = metrics
        self._inbox = inbox
        self._scrub = scrub
        self._backoff = backoff
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._progress: dict[str, Any] = {}
        self._progress_lock = threading.Lock()
        self._pending: collections.deque[_Item] = collections.deque()  # the lane thread's own
        self._broken: dict[str, str] = {}  # job id -> why one of its chunks was not sent
        self._retry_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="post", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, kind: str, payload: Any) -> None:
        self._queue.put((kind, payload))

    def progress(self, job_id: str, update: Any) -> None:
        with self._progress_lock:
            fresh = job_id not in self._progress
            self._progress[job_id] = update
        if fresh:
            self._queue.put(("progress", job_id))

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- the lane's thread ---------------------------------------------------------------
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
            if item.result is not None and item.job_id in self._broken:
                self._replace(item, self._broken.pop(item.job_id))
            started = self._clock.now()
            try:
                if item.result is None:
                    self._api.post_stream(item.job_id, item.chunk)
                else:
                    self._api.post_result(item.result)
            except RejectedByApi as exc:
                self._rejected(item, exc)
                continue
            except TransientError as exc:
                self._defer(item, exc)
                return
            except Exception as exc:  # it can never be sent: the job fails, the lane goes on
                self._unsendable(item, exc)
                continue
            self._pending.popleft()
            if item.result is not None:
                self._accepted(item.result, item.timings, self._clock.now() - started)
        self._backoff.succeeded()

    def _defer(self, item: _Item, exc: BaseException) -> None:
        # its job's items (in their order) go behind the other jobs' items waiting in this lane
        mine = [i for i in self._pending if i.job_id == item.job_id]
        if len(mine) < len(self._pending):
            others = [i for i in self._pending if i.job_id != item.job_id]
            self._pending = collections.deque([*others, *mine])
        delay, first = self._backoff.failed(getattr(exc, "retry_after", None))
        self._retry_at = self._clock.now() + delay
        self._metrics.count("result_post_retries")
        if first:
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
        self._replace(item, f"the job API rejected this job's result: {reason}")

    def _unsendable(self, item: _Item, exc: BaseException) -> None:
        """``item`` can never be posted: never retried, and its job fails saying why."""
        reason = self._scrub(f"could not be posted: {describe_error(exc)}")
        log.error("a post of job %s %s; not retried", item.job_id, reason,
                  extra={"event": "post_unsendable", "job_id": item.job_id})
        result = item.result
        if result is None:  # a chunk: dropped, and its job's result will say so
            self._pending.popleft()
            self._broken.setdefault(item.job_id, f"a streamed chunk {reason}")
        elif result.ok:
            self._replace(item, f"this job's result {reason}")
        else:  # an error result that cannot be posted: nothing more can be done
            self._pending.popleft()
            self._accepted(result, item.timings, 0.0)

    def _replace(self, item: _Item, error: str) -> None:
        """Answer ``item``'s job with ``error`` instead (written down first)."""
        assert item.result is not None
        # the same result (isStream, stopPod...) with the error in place of the output
        replacement = dataclasses.replace(item.result, output=None, error=error)
        try:
            self._outbox.put(replacement)
        except OSError as err:
            log.error("could not write the replacement result of %s down (%s)",
                      item.job_id, err.strerror or err, extra={"event": "outbox_write_failed"})
        item.result = replacement

    def _forget(self, job_id: str) -> None:
        self._pending = collections.deque(i for i in self._pending if i.job_id != job_id)
        self._broken.pop(job_id, None)
        with self._progress_lock:
            self._progress.pop(job_id, None)
        with contextlib.suppress(OSError):  # nothing of it should be there
            self._outbox.remove(job_id)
        log.info("job stopped by the platform: no result is posted for it",
                 extra={"event": "job_stopped", "job_id": job_id})
        self._inbox.put(Delivered(job_id, ok=False))
