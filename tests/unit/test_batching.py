"""The batch queue: one device thread; batches by key, oldest first, within max_rows; each member
its own answer, its own cancel; nothing a batch raises is lost or ends the device thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from adapters.stable_diffusion.device_queue import THREAD_NAME, BatchAbandoned, BatchQueue, Member
from domain.errors import JobCancelled, ModelError
from tests.support.harness import wait_until

DEADLINE = 30.0


class Ctx:
    """A job context that a test cancels by hand; records progress."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.reason: str | None = None
        self.updates: list[Any] = []

    def check_cancelled(self) -> None:
        if self.reason is not None:
            raise JobCancelled(self.reason)

    def progress(self, update: Any) -> None:
        self.updates.append(update)


class Recorder:
    """A ``run_batch`` that records each batch (works, thread) and answers ``work * 10``; the
    first batch waits for ``gate`` so that later jobs queue up behind it."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[Any]] = []
        self.threads: set[str] = set()
        self.gate = gate
        self.started = threading.Event()

    def __call__(self, members: list[Member[Any]]) -> None:
        self.batches.append([m.work for m in members])
        self.threads.add(threading.current_thread().name)
        self.started.set()
        if self.gate is not None and len(self.batches) == 1:
            assert self.gate.wait(DEADLINE)
        for member in members:
            member.resolve(member.work * 10)


class Jobs:
    """Jobs submitted from their own threads, answers collected by name."""

    def __init__(self, queue: BatchQueue[Any]) -> None:
        self.queue_ = queue
        self.answers: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []

    def submit(self, name: str, work: Any, *, key: Any = "k", rows: int = 1,
               ctx: Ctx | None = None) -> None:
        def run() -> None:
            try:
                self.answers[name] = self.queue_.submit(work, key=key, rows=rows,
                                                       ctx=ctx or Ctx(name))
            except BaseException as exc:
                self.answers[name] = exc

        thread = threading.Thread(target=run, daemon=True)
        self.threads.append(thread)
        thread.start()

    def queue(self, name: str, work: Any, **options: Any) -> None:
        """Submit a job and wait until it waits for the device (behind a held one)."""
        before = self.queue_.waiting
        self.submit(name, work, **options)
        wait_until(lambda: self.queue_.waiting == before + 1, timeout=DEADLINE,
                   what=f"{name} to queue")

    def join(self) -> None:
        for thread in self.threads:
            thread.join(DEADLINE)
            assert not thread.is_alive(), "a job's thread never got its answer"


def hold_the_device(queue: BatchQueue[Any], jobs: Jobs, recorder: Recorder) -> None:
    """Start a first job, and wait until the device thread is inside its batch."""
    jobs.submit("first", 0, key="first")
    assert recorder.started.wait(DEADLINE)


def test_calls_and_batches_all_run_on_the_one_device_thread() -> None:
    recorder = Recorder()
    queue: BatchQueue[Any] = BatchQueue(recorder, max_rows=4)
    assert queue.call(threading.current_thread) is not threading.current_thread()
    assert queue.call(lambda: threading.current_thread().name) == THREAD_NAME
    assert queue.submit(3, key="k", rows=1, ctx=Ctx("a")) == 30
    assert recorder.threads == {THREAD_NAME}


def test_a_call_that_raises_raises_in_the_caller_and_the_device_thread_goes_on() -> None:
    queue: BatchQueue[Any] = BatchQueue(Recorder())

    def broken() -> None:
        raise SystemExit("a model's exit")

    with pytest.raises(SystemExit, match="a model's exit"):
        queue.call(broken)
    assert queue.submit(1, key="k", rows=1, ctx=Ctx("a")) == 10


def test_jobs_waiting_behind_a_batch_form_the_next_batches_by_key_oldest_first() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    queue: BatchQueue[Any] = BatchQueue(recorder, max_rows=3)
    jobs = Jobs(queue)
    hold_the_device(queue, jobs, recorder)
    for name, work, key in [("a", 1, "x"), ("b", 2, "y"), ("c", 3, "x"), ("d", 4, "x"),
                            ("e", 5, "x"), ("f", 6, "y")]:
        jobs.queue(name, work, key=key)
    gate.set()
    jobs.join()

    assert recorder.batches == [[0], [1, 3, 4], [2, 6], [5]]
    assert {name: jobs.answers[name] for name in "abcdef"} == {
        "a": 10, "b": 20, "c": 30, "d": 40, "e": 50, "f": 60}
    assert queue.batch_sizes == {1: 2, 3: 1, 2: 1}


def test_rows_never_pass_max_rows_and_a_bigger_job_runs_alone() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    queue: BatchQueue[Any] = BatchQueue(recorder, max_rows=4)
    jobs = Jobs(queue)
    hold_the_device(queue, jobs, recorder)
    for name, work, rows in [("three", 1, 3), ("two", 2, 2), ("six", 3, 6), ("one", 4, 1)]:
        jobs.queue(name, work, rows=rows)
    gate.set()
    jobs.join()

    assert recorder.batches == [[0], [1, 4], [2], [3]]


def test_an_idle_device_waits_for_companions_and_stops_waiting_once_the_batch_is_full() -> None:
    recorder = Recorder()
    # An hour's window: the batch can only start because it filled up.
    queue: BatchQueue[Any] = BatchQueue(recorder, max_rows=2, wait_s=3600)
    jobs = Jobs(queue)
    jobs.submit("a", 1)
    jobs.submit("b", 2)
    jobs.join()
    assert [sorted(batch) for batch in recorder.batches] == [[1, 2]]
    assert jobs.answers == {"a": 10, "b": 20}


def test_a_job_stopped_while_it_waits_is_answered_at_the_next_step_and_never_runs() -> None:
    step = threading.Event()
    finish = threading.Event()
    stopped = Ctx("stopped")
    ran: list[Any] = []

    def run_batch(members: list[Member[Any]]) -> None:
        ran.extend(m.work for m in members)
        if members[0].work == "long":
            assert step.wait(DEADLINE)
            queue.members_left(members)  # the step callback of the running batch
            assert finish.wait(DEADLINE)
        for member in members:
            member.resolve(member.work)

    queue: BatchQueue[Any] = BatchQueue(run_batch, max_rows=4)
    jobs = Jobs(queue)
    jobs.submit("long", "long", key="other")
    wait_until(lambda: ran == ["long"], timeout=DEADLINE, what="the long batch to start")
    jobs.submit("stopped", "stopped", ctx=stopped)
    wait_until(lambda: queue.waiting == 1, timeout=DEADLINE, what="the job to queue")
    stopped.reason = "job-stop from the platform"
    step.set()
    wait_until(lambda: "stopped" in jobs.answers, timeout=DEADLINE, what="the stopped job's answer")
    assert isinstance(jobs.answers["stopped"], JobCancelled)
    assert "long" not in jobs.answers  # answered while the long batch still ran
    finish.set()
    jobs.join()
    assert ran == ["long"] and jobs.answers["long"] == "long"


def test_a_member_stopped_mid_batch_leaves_it_and_the_others_get_their_results() -> None:
    contexts = {name: Ctx(name) for name in "abc"}
    steps: list[list[str]] = []
    go = threading.Event()

    def run_batch(members: list[Member[Any]]) -> None:
        assert go.wait(DEADLINE)
        for step in range(3):
            if step == 1:
                contexts["b"].reason = "job-stop"
            left = queue.members_left(members)
            steps.append([m.work for m in left])
        for member in members:
            member.resolve(member.work.upper())

    queue: BatchQueue[Any] = BatchQueue(run_batch, max_rows=3, wait_s=3600)
    jobs = Jobs(queue)
    for name in "abc":
        jobs.submit(name, name, ctx=contexts[name])
    go.set()  # the batch can only start once all three are in it (max_rows, an hour's wait)
    jobs.join()

    assert [sorted(left) for left in steps] == [["a", "b", "c"], ["a", "c"], ["a", "c"]]
    assert jobs.answers["a"] == "A" and jobs.answers["c"] == "C"
    assert isinstance(jobs.answers["b"], JobCancelled)


def test_when_every_member_leaves_the_call_is_stopped() -> None:
    ctx = Ctx("only")
    stopped_with: list[BaseException] = []

    def run_batch(members: list[Member[Any]]) -> None:
        ctx.reason = "timeout"
        try:
            queue.members_left(members)
        except BatchAbandoned as exc:
            stopped_with.append(exc)
            raise

    queue: BatchQueue[Any] = BatchQueue(run_batch)
    with pytest.raises(JobCancelled, match="timeout"):
        queue.submit(1, key="k", rows=1, ctx=ctx)
    assert len(stopped_with) == 1


@pytest.mark.parametrize("raised", [SystemExit("bye"), KeyboardInterrupt(), ModelError("boom")])
def test_what_a_batch_raises_reaches_every_member_each_its_own_copy(
    raised: BaseException,
) -> None:
    fail_next = [True]

    def run_batch(members: list[Member[Any]]) -> None:
        if fail_next[0]:
            fail_next[0] = False
            raise raised
        for member in members:
            member.resolve("fine")

    queue: BatchQueue[Any] = BatchQueue(run_batch, max_rows=3, wait_s=3600)
    jobs = Jobs(queue)
    for name in "abc":
        jobs.submit(name, name)
    jobs.join()

    errors = [jobs.answers[name] for name in "abc"]
    assert all(type(e) is type(raised) and str(e) == str(raised) for e in errors)
    assert len({id(e) for e in errors}) == 3
    queue.wait_s = 0.0  # alone, the next job would wait an hour for companions
    assert queue.submit("x", key="k", rows=1, ctx=Ctx("x")) == "fine"


def test_a_member_the_batch_forgot_gets_a_model_error_not_a_hang() -> None:
    forgetful: Callable[[list[Member[Any]]], None] = lambda members: None  # noqa: E731
    queue: BatchQueue[Any] = BatchQueue(forgetful)
    with pytest.raises(ModelError, match="without an answer"):
        queue.submit(1, key="k", rows=1, ctx=Ctx("a"))
