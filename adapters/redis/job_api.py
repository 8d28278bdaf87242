"""The job API on Redis Streams: podworker's worker on a queue that a team runs itself.

It implements the ``JobApi`` and ``JobStopSource`` ports (:mod:`domain.ports`) on the layout
and scripts of :mod:`streamqueue` (the client's side of the same queue). What it promises:

- ``take`` reads up to ``max_jobs`` entries through the consumer group ``workers``
  (``XREADGROUP``, blocking at most the connections' ``block_s``), first taking over entries
  whose worker let their lease lapse (``XPENDING ... IDLE`` then ``XCLAIM``, the same as
  ``XAUTOCLAIM`` but never this worker's own entries, after ``lease_s``, at most every
  ``takeover_every_s``). A job taken more than ``max_attempts`` times is failed there, not run
  (the poison cap: a job that killed that many workers). A job already final (cancelled while
  queued) is acknowledged and skipped. While the group holds entries whose worker stopped
  renewing them, an empty take waits for their lease instead of coming back empty, so the last
  worker does not retire (idle exit) and leave them behind. It never sleeps otherwise and never
  retries (the worker owns backoff); Redis failures raise ``ApiUnavailable``.
- ``post_result`` writes the result into the job's record, announces it on the results stream
  and acknowledges the entry (``XACK``), all in one script, so the entry is acknowledged only
  once the result is in Redis; the result was in the worker's outbox before. A job already final
  keeps its first result (a duplicate is counted in ``<name>:stats``, logged, and accepted).
- ``ping`` (the heartbeat) renews the lease of every entry held for the jobs in flight
  (``XCLAIM ... JUSTID``: the delivery count is not raised); an entry another worker took over
  is logged once (``lease_lost``) and let go. Every ``maintain_every_s`` it also trims the jobs
  stream below the oldest entry still pending (what every worker is done with) and removes the
  consumers that hold nothing and were not seen for ``forget_consumers_after_s`` (workers long
  gone).
- ``post_stream`` and ``post_progress`` append to the job's own streams; progress is best
  effort and never raises.
- ``jobs_to_stop`` long-polls the cancels stream and returns the ids of the jobs this worker
  holds; their entries are acknowledged at once (their record already says ``CANCELLED``).

Nothing here deletes a pod: on Kubernetes the worker's idle exit (code 0) completes its Job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from adapters.redis.connection import Connections
from adapters.redis.errors import lost_group, translated
from adapters.redis.leases import Leases
from domain.errors import PodworkerError, RejectedByApi
from domain.job import Job, JobResult, job_from_wire
from domain.ports import Clock
from domain.scrubbing import Scrubber
from streamqueue import layout, scripts
from streamqueue.client import ensure_group
from streamqueue.records import text

log = logging.getLogger(__name__)

ENVELOPE_BYTES = 64 * 1024
POISON_ERROR = ("job not run again: it was taken %d times and no worker answered it (each one "
                "stopped first: a crash, an out-of-memory kill, a lost node); the cap is "
                "JOB_MAX_ATTEMPTS={cap}")


@dataclass(frozen=True)
class _Taken:
    entries: list[list[Any]]
    dropped: list[bytes]
    poisoned: list[list[Any]]
    orphan_wait_ms: int


class RedisJobApi:
    """One worker's side of a queue on Redis Streams (``JobApi`` and ``JobStopSource``)."""

    def __init__(
        self,
        *,
        connections: Connections,
        queue: str = layout.DEFAULT_QUEUE,
        worker_id: str,
        clock: Clock,
        lease_s: float = 60.0,
        max_attempts: int = 3,
        result_ttl_s: int = layout.DEFAULT_RESULT_TTL_S,
        max_input_bytes: int = 10_000_000,
        takeover_every_s: float | None = None,
        maintain_every_s: float | None = None,
        forget_consumers_after_s: float | None = None,
        scrub: Scrubber | None = None,
    ) -> None:
        self.keys = layout.Layout(queue)
        self.worker_id = worker_id
        self.leases = Leases()
        self._conn = connections
        self._redis: Any = connections.quick  # redis-py's answers typed sync-or-async: Any
        self._clock = clock
        self._lease_ms = max(1, round(lease_s * 1000))
        self._max_attempts = max_attempts
        self._ttl = result_ttl_s
        self._cap = max_input_bytes + ENVELOPE_BYTES
        self._block_s = connections.block_s
        self._takeover_every = takeover_every_s if takeover_every_s is not None else min(
            5.0, lease_s / 4)
        self._maintain_every = maintain_every_s if maintain_every_s is not None else max(
            30.0, lease_s)
        self._forget_after_ms = round(1000 * (forget_consumers_after_s
                                              if forget_consumers_after_s is not None
                                              else max(4 * lease_s, 600.0)))
        self._scrub = scrub or Scrubber([])
        self._take_script = self._redis.register_script(scripts.TAKE)
        self._renew_script = self._redis.register_script(scripts.RENEW)
        self._result_script = self._redis.register_script(scripts.RESULT)
        self._maintain_script = self._redis.register_script(scripts.MAINTAIN)
        self._poison_error = POISON_ERROR.replace("{cap}", str(max_attempts))
        self._ready = False
        self._takeover_at = 0.0
        self._maintain_at = clock.now() + self._maintain_every
        self._cancel_cursor: bytes | None = None

    def __repr__(self) -> str:
        return (f"RedisJobApi(redis={self._conn.where!r}, queue={self.keys.name!r}, "
                f"worker_id={self.worker_id!r})")

    # --- JobApi ---------------------------------------------------------------------------
    def take(self, *, job_in_progress: bool, max_jobs: int = 1) -> list[Job]:
        count = max(1, max_jobs)
        self._prepare()
        give_up_at = self._clock.now() + 2 * self._lease_ms / 1000 + self._block_s
        while True:
            taken = self._take(count, ())
            if taken.entries or taken.poisoned or taken.dropped:
                return self._jobs_from(taken)
            wait = self._block_s
            if taken.orphan_wait_ms >= 0:  # an entry nobody renews: its lease will lapse
                wait = min(wait, taken.orphan_wait_ms / 1000 + 0.05)
            delivered = self._block_read(count, wait)
            if delivered:
                return self._jobs_from(self._take(count, delivered))
            if taken.orphan_wait_ms < 0 or self._clock.now() >= give_up_at:
                return []
            self._takeover_at = 0.0  # take it over now

    def post_result(self, result: JobResult) -> None:
        status = layout.COMPLETED if result.ok else layout.FAILED
        try:
            body = json.dumps(result.to_wire(), separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RejectedByApi(f"the result of job {result.job_id!r} is not JSON: {exc}"
                                ) from None
        written, before = self._write_result(result.job_id, status, body)
        if not written:
            log.info("job %s was already %s: this result is a duplicate and is dropped",
                     result.job_id, text(before), extra={"event": "duplicate_result",
                                                          "job_id": result.job_id})

    def post_stream(self, job_id: str, chunk: Any) -> None:
        try:
            body = json.dumps(chunk, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RejectedByApi(f"a chunk of job {job_id!r} is not JSON: {exc}") from None
        key = self.keys.chunks(job_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.xadd(key, {"c": body, "a": self.leases.attempt(job_id)})
        pipe.expire(key, self._ttl)
        self._call(pipe.execute, f"stream a chunk of job {job_id!r}")

    def post_progress(self, job_id: str, progress: Any) -> None:
        try:
            body = json.dumps(progress, separators=(",", ":"), allow_nan=False)
            key = self.keys.progress(job_id)
            pipe = self._redis.pipeline(transaction=False)
            pipe.xadd(key, {"p": body}, maxlen=layout.PROGRESS_KEPT, approximate=True)
            pipe.expire(key, self._ttl)
            self._call(pipe.execute, f"send progress of job {job_id!r}")
        except (PodworkerError, TypeError, ValueError) as exc:
            log.debug("progress update for job %r not delivered: %s", job_id, exc)

    def ping(self, job_ids: Sequence[str]) -> None:
        try:
            entries = self.leases.entries_of(job_ids)
            if entries:
                self._renew(entries)
            if self._clock.now() >= self._maintain_at:
                self._maintain_at = self._clock.now() + self._maintain_every
                self._call(lambda: self._maintain_script(
                    keys=[self.keys.jobs], args=[self.keys.group, self._forget_after_ms]),
                    "tidy the queue")
        except PodworkerError as exc:
            log.debug("lease renewal not done: %s", exc)

    # --- JobStopSource --------------------------------------------------------------------
    def jobs_to_stop(self) -> list[str]:
        self._prepare()
        assert self._cancel_cursor is not None
        answer = self._call(lambda: self._conn.blocking.xread(
            {self.keys.cancels: self._cancel_cursor}, count=1000,
            block=max(1, round(self._block_s * 1000))), "read cancellations")
        stop: list[str] = []
        acks: list[bytes] = []
        with self.leases.lock:  # a take records what it took under this lock
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    self._cancel_cursor = entry_id
                    job_id = text(fields.get(b"id", b""))
                    if self.leases.holds(job_id):
                        acks += self.leases.release(job_id)
                        stop.append(job_id)
        if acks:
            self._call(lambda: self._redis.xack(self.keys.jobs, self.keys.group, *acks),
                       "acknowledge cancelled jobs")
        return stop

    def close(self) -> None:
        self._conn.close()

    # --- taking -----------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Once (and again after Redis lost the group): the group, and where cancels start."""
        if self._ready:
            return
        with self.leases.lock:
            self._call(lambda: ensure_group(self._redis, self.keys), "create the consumer group")
            if self._cancel_cursor is None:
                last = self._call(lambda: self._redis.xrevrange(self.keys.cancels, count=1),
                                  "read cancellations")
                self._cancel_cursor = bytes(last[0][0]) if last else b"0-0"
            self._ready = True

    def _take(self, count: int, delivered: Sequence[bytes]) -> _Taken:
        now = self._clock.now()
        takeover = ""
        if not delivered and now >= self._takeover_at:
            takeover, self._takeover_at = "1", now + self._takeover_every
        args: list[Any] = [
            self.keys.group, self.worker_id, count, self._lease_ms, takeover, self._max_attempts,
            self.keys.prefix, self._cap, self._ttl, layout.RESULTS_KEPT,
            self._lease_ms // 2, self._poison_error, *delivered]
        with self.leases.lock:  # recorded before any cancel read meanwhile is looked at
            reply = self._call(lambda: self._take_script(
                keys=[self.keys.jobs, self.keys.stats, self.keys.results], args=args), "take")
            taken = _Taken(reply[0], reply[1], reply[2], int(reply[3]))
            for entry_id, job_id, _body, attempt, _size in taken.entries:
                self.leases.hold(text(job_id), bytes(entry_id), int(attempt))
        return taken

    def _block_read(self, count: int, wait_s: float) -> list[bytes]:
        """Wait up to ``wait_s`` for new entries; returns their ids (now delivered to this
        worker: the take script records them)."""
        answer = self._call(lambda: self._conn.blocking.xreadgroup(
            self.keys.group, self.worker_id, {self.keys.jobs: ">"}, count=count,
            block=max(1, round(wait_s * 1000))), "take")
        return [bytes(entry_id) for _stream, entries in answer or [] for entry_id, _ in entries]

    def _jobs_from(self, taken: _Taken) -> list[Job]:
        for entry_id in taken.dropped:
            log.warning("queue entry %s has no job id: acknowledged and dropped",
                        text(entry_id), extra={"event": "job_without_id"})
        for job_id, runs in taken.poisoned:
            log.error("job %s failed without running: taken %d times, no worker answered it "
                      "(JOB_MAX_ATTEMPTS=%d)", text(job_id), int(runs), self._max_attempts,
                      extra={"event": "poison_job", "job_id": text(job_id)})
        now = self._clock.now()
        jobs: list[Job] = []
        for entry_id, raw_id, body, attempt, size in taken.entries:
            job_id = text(raw_id)
            if int(attempt) > 1:
                log.warning("job %s taken over (attempt %d): its worker stopped renewing its "
                            "lease", job_id, int(attempt),
                            extra={"event": "job_taken_over", "job_id": job_id})
            job = self._job(job_id, bytes(body), int(size), now)
            if job is None:
                self._refuse_id(job_id, entry_id)
                continue
            jobs.append(job)
        return jobs

    def _job(self, job_id: str, body: bytes, size: int, now: float) -> Job | None:
        if not body and size > 0:
            return Job(job_id, {}, now, problem=f"the job is {size} bytes, over the limit of "
                       f"{self._cap} bytes")
        try:
            payload = json.loads(body) if body else None
        except (ValueError, RecursionError):
            return Job(job_id, {}, now, problem="the job is not JSON")
        raw_input = payload.get("input") if isinstance(payload, dict) else payload
        return job_from_wire({"id": job_id, "input": raw_input}, now)

    def _refuse_id(self, job_id: str, entry_id: bytes) -> None:
        """An id no job can be made of (over ``MAX_ANSWERED_ID_LENGTH`` characters, not UTF-8):
        failed here. Ids the worker can answer but will not run (over 256 characters, control
        characters) come out as jobs with a ``problem``, answered by the worker's loop."""
        problem = "invalid input: the job id must be printable and at most 256 characters"
        log.warning("job id refused (%s...): %s", job_id[:40].encode("unicode_escape").decode(),
                    problem, extra={"event": "job_id_refused"})
        self._write_result(job_id, layout.FAILED, json.dumps({"error": problem}))

    # --- results and leases ---------------------------------------------------------------
    def _write_result(self, job_id: str, status: str, body: str) -> tuple[int, Any]:
        entries = self.leases.entries(job_id)
        keys = [self.keys.job(job_id), self.keys.results, self.keys.jobs, self.keys.stats,
                self.keys.progress(job_id), self.keys.chunks(job_id)]
        args: list[Any] = [self.keys.group, status, body, self._ttl, self.worker_id,
                           layout.RESULTS_KEPT, job_id, *entries]
        written, before = self._call(lambda: self._result_script(keys=keys, args=args),
                                     f"store the result of job {job_id!r}")
        self.leases.release(job_id)
        return int(written), before

    def _renew(self, entries: list[bytes]) -> None:
        _kept, lost, _gone = self._call(lambda: self._renew_script(
            keys=[self.keys.jobs], args=[self.keys.group, self.worker_id, *entries]),
            "renew leases")
        lost = [bytes(e) for e in lost]
        for job_id in self.leases.drop_entries(lost):
            log.warning("job %s was taken over by another worker (its lease lapsed before it "
                        "was renewed); the first result stands", job_id,
                        extra={"event": "lease_lost", "job_id": job_id})

    def _call(self, command: Any, what: str) -> Any:
        try:
            return command()
        except (redis.RedisError, OSError) as exc:
            if lost_group(exc):
                self._ready = False  # Redis lost its data: the group is made again
            error = translated(exc, self._conn.where, what)
            raise type(error)(self._scrub(str(error))) from None
