"""The client of a podworker queue on Redis Streams: what a team's API server calls.

It imports nothing of podworker's worker (only ``redis`` and this package), so an API server
installs it alone. One :class:`JobQueue` per process is enough: its Redis connection pool is
thread-safe.

    queue = JobQueue.from_url("redis://redis:6379/0", password=os.environ["REDIS_PASSWORD"])
    queue.submit({"prompt": "a lighthouse"}, job_id="order-1234")   # the id is yours
    state = queue.wait("order-1234", timeout_s=300)                 # COMPLETED, FAILED, ...
    state.output, state.error

What it promises:

- ``submit`` is idempotent per id: an id the queue already knows changes nothing (a submit
  whose answer was lost can be sent again); ids follow the worker's rule (non-empty, printable,
  at most 256 characters), inputs must be JSON objects within ``max_input_bytes``;
- a job's status moves ``IN_QUEUE`` -> ``IN_PROGRESS`` -> ``COMPLETED``/``FAILED``/
  ``CANCELLED`` and a final status never changes: a client sees exactly one result per job;
- ``wait`` and ``wait_all`` wake on the results stream (no polling loop against the records),
  re-reading the records at least once a second, so a trimmed stream or a restarted Redis cannot
  leave them waiting past their timeout;
- every Redis failure surfaces as :class:`QueueUnavailable` (connection refused, timeouts,
  Redis loading its data after a restart, out of memory), never as a redis-py exception, and
  never with the password in its message.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from streamqueue import layout, scripts
from streamqueue.records import (
    Chunk,
    JobState,
    QueueError,
    QueueUnavailable,
    Submitted,
    UnknownJob,
    WaitTimeout,
    chunk_of,
    state_of,
    text,
)

__all__ = ["Chunk", "JobQueue", "JobState", "QueueError", "QueueUnavailable", "Submitted",
           "UnknownJob", "WaitTimeout"]

WAKE_S = 1.0
"""The longest a waiting call blocks before it reads the job records again."""


class JobQueue:
    """Submit, follow, and cancel the jobs of one queue."""

    def __init__(
        self,
        client: redis.Redis,
        name: str = layout.DEFAULT_QUEUE,
        *,
        result_ttl_s: int = layout.DEFAULT_RESULT_TTL_S,
        max_input_bytes: int = 10_000_000,
    ) -> None:
        self.layout = layout.Layout(name)
        self._redis: Any = client  # redis-py types each answer as sync-or-async: read as Any
        self._ttl = result_ttl_s
        self._max_input_bytes = max_input_bytes
        self._submit = client.register_script(scripts.SUBMIT)
        self._cancel = client.register_script(scripts.CANCEL)
        self._group_ready = False

    @classmethod
    def from_url(
        cls, url: str, name: str = layout.DEFAULT_QUEUE, *, password: str | None = None,
        timeout_s: float = 5.0, **options: Any,
    ) -> JobQueue:
        """A queue on the Redis at ``url`` (``redis://host:6379/0``, ``rediss://`` for TLS).
        redis-py's own retries are off: the caller decides what to do with
        :class:`QueueUnavailable`. ``timeout_s`` bounds a connect and each reply."""
        client = redis.Redis.from_url(
            url, password=password, socket_timeout=timeout_s + WAKE_S,
            socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0),
        )
        return cls(client, name, **options)

    def close(self) -> None:
        self._redis.close()

    # --- submitting -----------------------------------------------------------------------
    def submit(self, job_input: Mapping[str, Any], job_id: str | None = None) -> str:
        """Queue one job; returns its id (a new random one when none is given)."""
        return self.submit_many([(job_id, job_input)])[0].id

    def submit_many(
        self, jobs: Iterable[tuple[str | None, Mapping[str, Any]]]
    ) -> list[Submitted]:
        """Queue several jobs in one round trip, in order. Every input is checked first:
        one bad id or input raises ``ValueError`` and queues none."""
        bodies = [self._job_body(job_id, job_input) for job_id, job_input in jobs]
        self.ensure_group()
        with _translated("submit"):
            pipe = self._redis.pipeline(transaction=False)
            for job_id, body in bodies:
                self._submit(keys=[self.layout.jobs, self.layout.job(job_id)],
                             args=[job_id, body], client=pipe)
            answers = pipe.execute()
        return [Submitted(job_id, bool(added), text(status) if not added else layout.IN_QUEUE)
                for (job_id, _), (added, status) in zip(bodies, answers, strict=True)]

    def _job_body(self, job_id: str | None, job_input: Mapping[str, Any]) -> tuple[str, str]:
        job_id = uuid.uuid4().hex if job_id is None else job_id
        problem = layout.job_id_problem(job_id)
        if problem is not None:
            raise ValueError(problem)
        if not isinstance(job_input, Mapping):
            raise ValueError(f"job {job_id!r}: the input must be a JSON object")
        try:
            body = json.dumps({"id": job_id, "input": dict(job_input)}, separators=(",", ":"),
                              allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"job {job_id!r}: the input is not JSON ({exc})") from None
        if len(body.encode()) > self._max_input_bytes:
            raise ValueError(f"job {job_id!r}: the input is over {self._max_input_bytes} bytes")
        return job_id, body

    def ensure_group(self) -> None:
        """Create the jobs stream and its consumer group when missing (from the stream's start,
        so jobs queued before any worker ran are delivered)."""
        if self._group_ready:
            return
        with _translated("create the consumer group"):
            ensure_group(self._redis, self.layout)
        self._group_ready = True

    # --- reading ------------------------------------------------------------------------
    def status(self, job_id: str) -> JobState:
        """The job's state now; raises ``UnknownJob``."""
        with _translated("read a job"):
            record = self._redis.hgetall(self.layout.job(job_id))
        return state_of(job_id, record)

    def progress(self, job_id: str) -> Any:
        """The job's latest progress update, or None."""
        with _translated("read progress"):
            last = self._redis.xrevrange(self.layout.progress(job_id), count=1)
        return json.loads(last[0][1][b"p"]) if last else None

    def wait(self, job_id: str, timeout_s: float | None = None) -> JobState:
        """Block until the job is final; raises ``WaitTimeout`` or ``UnknownJob``."""
        return self.wait_all([job_id], timeout_s)[job_id]

    def wait_all(self, job_ids: Iterable[str], timeout_s: float | None = None
                 ) -> dict[str, JobState]:
        """Block until every job is final (one reader of the results stream for all)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        waiting = list(dict.fromkeys(job_ids))
        done: dict[str, JobState] = {}
        cursor = self._last_result_id()
        check, checked_all_at = waiting, time.monotonic()
        while True:
            for state in self._states(check):
                if state.final:
                    done[state.id] = state
            waiting = [job_id for job_id in waiting if job_id not in done]
            if not waiting:
                return done
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(f"{len(waiting)} job(s) not final within {timeout_s:g} s, "
                                  f"e.g. {waiting[0]!r}")
            block = WAKE_S if left is None else max(0.001, min(WAKE_S, left))
            with _translated("read results"):
                answer = self._redis.xread({self.layout.results: cursor}, count=10_000,
                                           block=int(block * 1000))
            announced: set[str] = set()
            for _stream, entries in answer or []:
                cursor = entries[-1][0]
                announced.update(text(fields.get(b"id", b"")) for _id, fields in entries)
            if not answer or time.monotonic() - checked_all_at >= WAKE_S:
                check, checked_all_at = waiting, time.monotonic()  # whatever was announced
            else:
                check = [job_id for job_id in waiting if job_id in announced]

    def results(self, after: str = "$", block_s: float = WAKE_S) -> Iterator[tuple[str, str, str]]:
        """Follow the results stream: ``(cursor, job id, status)`` for each job made final
        after ``after`` (``$``: from now; a cursor handed out earlier: from there). Endless:
        stop iterating to stop."""
        cursor: str | bytes = self._last_result_id() if after == "$" else after
        while True:
            with _translated("read results"):
                answer = self._redis.xread({self.layout.results: cursor}, count=1000,
                                           block=int(block_s * 1000))
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    cursor = entry_id
                    yield text(entry_id), text(fields[b"id"]), text(fields[b"status"])

    def stream(self, job_id: str, timeout_s: float | None = None) -> Iterator[Chunk]:
        """The job's streamed output, chunk by chunk, until it is final."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        key = self.layout.chunks(job_id)
        cursor: bytes = b"0-0"
        while True:
            if deadline is not None and time.monotonic() >= deadline:  # even while chunks flow
                raise WaitTimeout(f"job {job_id!r} not final within {timeout_s:g} s")
            with _translated("read a stream"):
                answer = self._redis.xread({key: cursor}, count=1000,
                                           block=int(WAKE_S * 1000))
            if answer:
                for entry_id, fields in answer[0][1]:
                    cursor = entry_id
                    yield chunk_of(fields)
                continue
            if self.status(job_id).final:  # chunks come before the final status: drain
                with _translated("read a stream"):
                    rest = self._redis.xrange(key, b"(" + cursor, b"+")
                for entry_id, fields in rest:
                    cursor = entry_id
                    yield chunk_of(fields)
                return

    # --- changing -----------------------------------------------------------------------
    def cancel(self, job_id: str) -> str:
        """Cancel the job: a queued one never runs, a running one is stopped by its worker
        (which posts nothing more for it). Returns the status after the call (a job already
        final keeps its own); raises ``UnknownJob``."""
        with _translated("cancel"):
            changed, status = self._cancel(
                keys=[self.layout.job(job_id), self.layout.results, self.layout.cancels],
                args=[job_id, self._ttl, layout.RESULTS_KEPT, layout.CANCELS_KEPT])
        if not changed and not status:
            raise UnknownJob(job_id)
        return layout.CANCELLED if changed else text(status)

    # --- the queue as a whole -----------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Jobs waiting (``lag``, what KEDA scales on), held by workers (``pending``), the
        stream's length, the workers known, and the counters of ``<name>:stats``."""
        with _translated("read the queue's state"):
            length = self._redis.xlen(self.layout.jobs)
            try:
                groups = self._redis.xinfo_groups(self.layout.jobs)
            except redis.ResponseError:  # no stream yet
                groups = []
            stats = self._redis.hgetall(self.layout.stats)
        group: dict[str, Any] = next(
            (g for g in groups if text(g.get("name", b"")) == self.layout.group), {})
        return {
            "queue": self.layout.name,
            "stream": self.layout.jobs,
            "group": self.layout.group,
            "length": int(length),
            "lag": group.get("lag"),
            "pending": int(group.get("pending", 0)),
            "consumers": int(group.get("consumers", 0)),
            "stats": {text(k): int(v) for k, v in stats.items()},
        }

    # --- helpers ------------------------------------------------------------------------
    def _last_result_id(self) -> bytes:
        with _translated("read results"):
            last = self._redis.xrevrange(self.layout.results, count=1)
        return bytes(last[0][0]) if last else b"0-0"

    def _states(self, job_ids: list[str]) -> list[JobState]:
        with _translated("read jobs"):
            pipe = self._redis.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hgetall(self.layout.job(job_id))
            records = pipe.execute()
        return [state_of(job_id, record) for job_id, record in zip(job_ids, records, strict=True)]


def ensure_group(client: redis.Redis, keys: layout.Layout) -> None:
    """``XGROUP CREATE <jobs> workers 0 MKSTREAM``, a group already there being fine."""
    try:
        client.xgroup_create(keys.jobs, keys.group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Redis's errors as this client's (never with the URL or password in them)."""
    try:
        yield
    except redis.RedisError as exc:
        raise QueueUnavailable(f"could not {what}: {describe(exc)}") from None


def describe(exc: BaseException) -> str:
    """A redis-py error in one short line: its kind and Redis's own words (they name hosts and
    ports, never a password)."""
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


