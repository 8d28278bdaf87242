"""The worker's life with in-memory fakes: the idle TTL and pod termination, results kept
across crashes and refusals, a model that cannot load, a job API that does not long-poll."""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path
from typing import Any

from adapters.clock import ManualClock
from adapters.local.outbox import InMemoryOutbox
from adapters.local.pod_control import RecordingPodControl
from adapters.local.storage import LocalFolderStorage
from app.stages import ExitCode, WorkerState
from domain.errors import PodControlUnavailable
from domain.job import Artifact, Job, JobResult
from domain.lifecycle import LifecyclePolicy
from domain.ports import JobContext
from tests.support.harness import make_harness, wait_until


class RefusingPodControl(RecordingPodControl):
    """A pod control whose API answers 503: it counts the tries and refuses each."""

    def terminate(self) -> None:
        self.terminated += 1
        raise PodControlUnavailable("pod control API answered 503")


def test_idle_ttl_expiry_terminates_the_pod_once_after_results_are_flushed(tmp_path: Path) -> None:
    clock = ManualClock()
    policy = LifecyclePolicy(idle_ttl=60.0, execution_timeout=30.0)
    h = make_harness(tmp_path, clock=clock, policy=policy)
    h.api.fail_posts = 3  # the result needs a few tries: terminate must wait for it
    h.start()
    h.api.submit({"n": 1}, job_id="last")
    # the job has run (its first post failed): only now does time move, so the job itself never
    # sees its 30 s work timeout pass
    wait_until(lambda: h.api.fail_posts == 2, what="the first post to fail")
    clock.advance(61)  # the TTL runs out while the result is still undelivered
    for failures_left in (2, 1, 0):
        wait_until(partial(lambda n: h.api.fail_posts <= n, failures_left), what="a failed post")
        assert h.pod.terminated == 0  # never while a result waits
        clock.advance(31)  # past the delivery retry timer
        h.worker.stages.poster.retry_now()
    wait_until(lambda: "last" in h.api.results, what="the result to be delivered")
    clock.advance(61)
    assert h.join() is ExitCode.OK
    assert h.pod.terminated == 1
    assert h.api.results["last"].ok


def test_idle_ttl_never_expires_while_a_job_is_in_flight(tmp_path: Path) -> None:
    clock = ManualClock()
    policy = LifecyclePolicy(idle_ttl=1.0, execution_timeout=1e6)
    h = make_harness(tmp_path, clock=clock, policy=policy).start()
    release = threading.Event()
    h.api.submit({"_echo": {"sleep_ms": 400}}, job_id="busy")
    wait_until(lambda: h.model.runs >= 1, what="the job to start")
    clock.advance(3600)
    assert not release.wait(0.05)  # the controller had time to look
    assert h.pod.terminated == 0
    assert h.api.wait_for_results(1)
    assert h.pod.terminated == 0
    h.stop()


def test_worker_zero_never_terminates(tmp_path: Path) -> None:
    clock = ManualClock()
    h = make_harness(tmp_path, clock=clock, policy=LifecyclePolicy(idle_ttl=None)).start()
    wait_until(lambda: h.worker.snapshot.state is not WorkerState.STARTING, what="ready")
    clock.advance(10**9)
    h.api.submit({}, job_id="after-a-long-time")
    assert h.api.wait_for_results(1)
    assert h.stop() is ExitCode.OK
    assert h.pod.terminated == 0


def test_a_failed_pod_termination_still_ends_the_process_with_code_5(tmp_path: Path) -> None:
    clock = ManualClock()
    h = make_harness(tmp_path, clock=clock, policy=LifecyclePolicy(idle_ttl=1.0),
                     pod=RefusingPodControl())
    h.start()
    wait_until(lambda: h.worker.snapshot.state is not WorkerState.STARTING, what="ready")
    clock.advance(2)
    assert h.join() is ExitCode.TERMINATE_FAILED
    assert h.pod.terminated == 1


def test_results_the_api_refused_stay_in_the_outbox_and_are_sent_later(tmp_path: Path) -> None:
    outbox = InMemoryOutbox()
    h = make_harness(tmp_path, outbox=outbox)
    h.api.fail_posts = 2
    h.start()
    h.api.submit({"x": 1}, job_id="kept")
    wait_until(lambda: h.api.fail_posts == 1, what="the first post to fail")
    assert [r.job_id for r in outbox.pending()] == ["kept"]
    assert "kept" not in h.api.results
    h.worker.stages.poster.retry_now()
    wait_until(lambda: h.api.fail_posts == 0, what="the second post to fail")
    h.worker.stages.poster.retry_now()
    assert h.api.wait_for_results(1)
    h.stop()
    assert outbox.pending() == []
    assert [r.job_id for r in h.api.posted] == ["kept"]


def test_a_job_the_worker_died_on_is_reported_failed_at_the_next_start(tmp_path: Path) -> None:

    outbox = InMemoryOutbox()
    outbox.started(Job("crashed", {}, 0.0))
    outbox.put(JobResult.success("finished-not-posted", {"x": 1}))
    h = make_harness(tmp_path, outbox=outbox).start()
    assert h.api.wait_for_results(2)
    h.stop()
    assert h.api.results["crashed"].error == (
        "worker restarted while running this job (the worker process died)"
    )
    assert h.api.results["finished-not-posted"].output == {"x": 1}
    assert outbox.pending() == []


def test_a_job_that_crashed_the_worker_twice_is_not_run_a_third_time(tmp_path: Path) -> None:

    outbox = InMemoryOutbox()
    for _ in range(2):
        outbox.started(Job("poison", {}, 0.0))
        outbox.abandoned("poison")
    h = make_harness(tmp_path, outbox=outbox).start()
    h.api.submit({}, job_id="poison")
    assert h.api.wait_for_results(1)
    h.stop()
    assert "poison-job guard" in (h.api.results["poison"].error or "")
    assert h.model.runs == 0


def test_a_model_that_cannot_load_tells_one_waiting_job_why_and_ends_the_worker_with_code_4(
    tmp_path: Path,
) -> None:
    class Broken:
        def load(self) -> None:
            raise OSError("weights not found")

        def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
            raise AssertionError("never")

    h = make_harness(tmp_path, model=Broken())
    h.api.submit({}, job_id="waiting")
    h.start()
    assert h.join() is ExitCode.MODEL_LOAD
    assert h.api.taken == ["waiting"]  # one job, told why (tests/unit/test_failed_start.py)
    assert (h.api.results["waiting"].error or "").startswith(
        "the worker could not start: OSError: weights not found (phase load, after ")
    assert h.worker.start_failure is not None
    assert h.worker.start_failure.error == "OSError: weights not found"


def test_a_job_api_that_answers_no_job_at_once_is_not_hammered(tmp_path: Path) -> None:
    h = make_harness(tmp_path, poll_timeout=0.0,  # answers "no job" at once
                     min_poll_interval_s=0.2).start()
    wait_until(lambda: h.api.takes >= 3, what="a few polls")
    started = h.api.takes
    assert not threading.Event().wait(1.0)  # watch the request rate for one second
    polls_in_a_second = h.api.takes - started
    h.stop()
    assert polls_in_a_second <= 6


def test_a_result_written_down_just_before_a_crash_is_kept_not_replaced_by_a_failure(
    tmp_path: Path,
) -> None:

    outbox = InMemoryOutbox()
    outbox.started(Job("done-then-died", {}, 0.0))
    outbox.put(JobResult.success("done-then-died", {"x": 1}))  # died before clearing the mark
    h = make_harness(tmp_path, outbox=outbox).start()
    assert h.api.wait_for_results(1)
    h.stop()
    assert h.api.results["done-then-died"] == JobResult.success("done-then-died", {"x": 1})
    assert outbox.interrupted() == []


def test_local_outputs_are_readable_files_like_any_other(tmp_path: Path) -> None:
    ref = LocalFolderStorage(tmp_path).store("j", 0, Artifact(b"png"))
    assert Path(ref).stat().st_mode & 0o777 == 0o644
