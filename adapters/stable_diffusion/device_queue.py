"""Dynamic batching: jobs that can share one model call run together, on one device thread.

Why: a GPU makes several small images in one call in little more time than one. Jobs that are
on the model at once (``CONCURRENCY`` > 1) and agree on everything the call shares (their
*key*: for Stable Diffusion the task, size, steps, scheduler and guidance) can run as one batch,
and each still gets its own result. No model here knows about the others: a job's thread hands
its prepared work to a :class:`BatchQueue` and waits for its own answer.

What a :class:`BatchQueue` promises:

- **One device thread.** Every call (:meth:`BatchQueue.call`: load, warm-up) and every batch
  runs on one daemon thread, ``model-device``, one at a time. CUDA state, cuDNN plans and
  CUDA-graph trees are per thread, so the warm-up's work is the jobs' work, and no two calls
  ever share a pipeline at once, however many jobs the worker runs.
- **Batches by key, oldest first.** The oldest waiting job opens a batch; waiting jobs with an
  equal key join it, oldest first, while its rows stay within ``max_rows`` (a job with more rows
  runs alone; ``max_rows=1`` turns batching off). An idle device waits up to ``wait_s`` for
  companions, and stops waiting once the batch is full; under load, the jobs that queued while
  one batch ran form the next.
- **Each member its own.** Each member's answer, a value or an error, goes to its own thread.
  :meth:`BatchQueue.members_left`, called at every step, checks each member's
  ``ctx.check_cancelled()``: a member that must stop (a job-stop, its work timeout) gets its own
  error at once and leaves the batch; its rows are still computed until the call ends, then
  dropped. When no member is left, the call is stopped with :class:`BatchAbandoned`. Waiting
  jobs are checked at the same time, so a job stopped in the queue is answered within a step.
- **No waiter is forgotten.** Whatever a batch raises (``BaseException`` too) is handed to every
  member still without an answer, each its own copy, traceback dropped.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from domain.errors import ModelError, PodworkerError
from domain.outputs import describe_error
from domain.ports import JobContext

log = logging.getLogger("podworker.model")

W = TypeVar("W")
R = TypeVar("R")

THREAD_NAME = "model-device"


class BatchAbandoned(PodworkerError):
    """Every member of a running batch left it (each already has its own error)."""

    def __init__(self) -> None:
        super().__init__("every job of the batch was stopped")


class Member(Generic[W]):
    """One job's place in a batch: its work, its key, its rows, and its answer once given."""

    def __init__(self, work: W, key: Hashable, rows: int, ctx: JobContext) -> None:
        self.work = work
        self.key = key
        self.rows = rows
        self.ctx = ctx
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    @property
    def answered(self) -> bool:
        return self._done.is_set()

    def resolve(self, value: Any) -> None:
        """Answer with ``value`` (only the first answer counts)."""
        if not self.answered:
            self._value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        """Answer with ``error`` (only the first answer counts)."""
        if not self.answered:
            error.__traceback__ = None  # a held traceback keeps the failed call's tensors alive
            self._error = error
            self._done.set()

    def wait(self) -> Any:
        """The answer: the value, or the error raised here, on the job's own thread."""
        self._done.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._value


class _Call:
    """A plain call to run on the device thread (load, warm-up); never batched."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as exc:
            exc.__traceback__ = None
            self.error = exc
        self.done.set()


class BatchQueue(Generic[W]):
    """Runs calls and batches of members on one device thread; see the module docstring.

    ``run_batch(members)`` runs one batch on the device thread and answers each member with
    ``member.resolve``/``member.fail``; members it leaves unanswered get a ``ModelError``.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Member[W]]], None],
        *,
        max_rows: int = 1,
        wait_s: float = 0.0,
    ) -> None:
        self._run_batch = run_batch
        self.max_rows = max(1, max_rows)
        self.wait_s = max(0.0, wait_s)
        self._cond = threading.Condition()
        self._waiting: collections.deque[Member[W] | _Call] = collections.deque()
        self._thread: threading.Thread | None = None
        self.batch_sizes: collections.Counter[int] = collections.Counter()  # jobs -> batches

    @property
    def waiting(self) -> int:
        """How many jobs (and calls) wait for the device thread now."""
        with self._cond:
            return len(self._waiting)

    def call(self, fn: Callable[[], R]) -> R:
        """``fn()`` run on the device thread (at once when called there); its value or error."""
        if threading.current_thread() is self._thread:
            return fn()
        call = _Call(fn)
        self._put(call)
        call.done.wait()
        if call.error is not None:
            error, call.error = call.error, None
            raise error
        value: R = call.value
        return value

    def submit(self, work: W, *, key: Hashable, rows: int, ctx: JobContext) -> Any:
        """Run ``work`` in a batch of its key; its answer (raised when an error). Blocks."""
        member = Member(work, key, rows, ctx)
        self._put(member)
        return member.wait()

    def members_left(self, members: list[Member[W]]) -> list[Member[W]]:
        """The members of a running batch still wanted (called by ``run_batch`` at each step).

        A member that must stop is answered with its own error now; waiting jobs are checked
        too. Raises :class:`BatchAbandoned` when no member is left.
        """
        left = [m for m in members if not m.answered and _still_wanted(m)]
        with self._cond:
            self._waiting = collections.deque(
                item for item in self._waiting if isinstance(item, _Call) or _still_wanted(item)
            )
        if not left:
            raise BatchAbandoned()
        return left

    # --- the device thread -------------------------------------------------------------------
    def _put(self, item: Member[W] | _Call) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=THREAD_NAME,
                                                daemon=True)
                self._thread.start()
            self._waiting.append(item)
            self._cond.notify_all()

    def _serve(self) -> None:
        while True:
            item = self._next()
            if isinstance(item, _Call):
                item.run()
                continue
            self._run(item)

    def _run(self, batch: list[Member[W]]) -> None:
        self.batch_sizes[len(batch)] += 1
        if len(batch) > 1:
            log.debug("running %d jobs as one batch", len(batch),
                      extra={"event": "batch", "jobs": len(batch),
                             "images": sum(m.rows for m in batch)})
        try:
            self._run_batch(batch)
        except BaseException as exc:  # a model's SystemExit must not end the device thread
            unanswered = [member for member in batch if not member.answered]
            for index, member in enumerate(unanswered):
                member.fail(exc if index == 0 else _copy_of(exc))
            exc.__traceback__ = None
        for member in batch:
            member.fail(ModelError("the batch ended without an answer for this job"))

    def _next(self) -> list[Member[W]] | _Call:
        """The next call, or the next batch: the oldest wanted job and the companions it gets."""
        with self._cond:
            while True:
                while not self._waiting:
                    self._cond.wait()
                first = self._waiting.popleft()
                if isinstance(first, _Call):
                    return first
                if _still_wanted(first):
                    break
            batch = [first]
            rows = first.rows
            deadline = time.monotonic() + self.wait_s
            while True:
                rows = self._gather(batch, rows)
                remaining = deadline - time.monotonic()
                if rows >= self.max_rows or remaining <= 0:
                    return batch
                self._cond.wait(remaining)

    def _gather(self, batch: list[Member[W]], rows: int) -> int:
        """Move waiting jobs with the batch's key into it, oldest first, while they fit."""
        key = batch[0].key
        kept: collections.deque[Member[W] | _Call] = collections.deque()
        for item in self._waiting:
            if (isinstance(item, Member) and item.key == key
                    and rows + item.rows <= self.max_rows and _still_wanted(item)):
                batch.append(item)
                rows += item.rows
            elif isinstance(item, _Call) or not item.answered:
                kept.append(item)
        self._waiting = kept
        return rows


def _still_wanted(member: Member[Any]) -> bool:
    """False (and the member answered with its own error) when its job must stop now."""
    if member.answered:
        return False
    try:
        member.ctx.check_cancelled()
    except BaseException as exc:
        member.fail(exc)
        return False
    return True


def _copy_of(error: BaseException) -> BaseException:
    """A copy of ``error`` of the same type and message, for one member (each raises its own)."""
    try:
        copy = error.__class__.__new__(error.__class__)
        copy.__dict__.update(error.__dict__)
        copy.args = error.args
        copy.__suppress_context__ = True  # like the original: raised "from None", no chain
        str(copy)  # a copy that cannot describe itself is no use
    except BaseException:
        return ModelError(describe_error(error))
    return copy
