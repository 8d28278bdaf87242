"""The controller against what a hostile platform and a misbehaving model do, with fakes:
duplicate ids, exceptions ``except Exception`` misses, a model that returns after the worker
gave up on it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from adapters.clock import SystemClock
from adapters.local.job_api import InMemoryJobApi
from app.stages import ExitCode
from domain.errors import ApiUnavailable
from domain.job import JobResult
from domain.lifecycle import LifecyclePolicy
from domain.ports import JobContext
from tests.support.harness import make_harness, wait_until


class Unprintable(Exception):
    def __str__(self) -> str:
        raise SystemExit("even my message exits")


class Misbehaving:
    """Raises what the job's input names; returns its input otherwise."""

    def load(self) -> None:
        pass

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        kind = job_input.get("raise")
        if kind == "SystemExit":
            raise SystemExit(3)
        if kind == "KeyboardInterrupt":
            raise KeyboardInterrupt
        if kind == "GeneratorExit":
            raise GeneratorExit
        if kind == "BaseException":
            raise BaseException("bare")
        if kind == "Unprintable":
            raise Unprintable
        return job_input


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("SystemExit", "SystemExit: 3"), ("KeyboardInterrupt", "KeyboardInterrupt"),
     ("GeneratorExit", "GeneratorExit"), ("BaseException", "BaseException: bare"),
     ("Unprintable", "Unprintable: (its message could not be read)")],
)
def test_what_except_exception_misses_is_that_jobs_error_and_the_next_job_runs(
    tmp_path: Path, kind: str, expected: str
) -> None:
    policy = LifecyclePolicy(idle_ttl=None, execution_timeout=600)
    h = make_harness(tmp_path, model=Misbehaving(), policy=policy).start()
    h.api.submit({"raise": kind}, job_id="bad")
    h.api.submit({"fine": 1}, job_id="next")
    assert h.api.wait_for_results(2, timeout=20)
    assert h.stop() is ExitCode.OK
    assert h.api.results["bad"].error == expected
    assert h.api.results["next"].output == {"fine": 1}


def test_one_id_handed_out_three_times_in_a_batch_runs_once_and_is_answered_once(
    tmp_path: Path,
) -> None:
    h = make_harness(tmp_path)
    h.api.submit_batch([*[{"id": "dup", "input": {"n": 1}}] * 3, {"id": "other", "input": {}}])
    h.start()
    assert h.api.wait_for_results(2)
    wait_until(lambda: h.worker.snapshot.in_flight == (), what="nothing held")
    assert h.stop() is ExitCode.OK
    assert [r.job_id for r in h.api.posted].count("dup") == 1
    assert h.api.results["dup"] == JobResult.success("dup", {"n": 1})
    assert h.model.runs == 2


def test_an_id_handed_out_again_while_its_result_waits_is_answered_once_by_the_first_copy(
    tmp_path: Path,
) -> None:
    h = make_harness(tmp_path)
    h.api.fail_posts = 2  # the first copy's result waits for a retry
    h.start()
    h.api.submit({"copy": 1}, job_id="again")
    wait_until(lambda: h.api.fail_posts == 1, what="the first post to fail")
    h.api.submit({"copy": 2}, job_id="again")
    wait_until(lambda: h.api.queued == 0, what="the second copy to be taken")
    assert h.api.wait_for_results(1)
    wait_until(lambda: h.worker.snapshot.in_flight == (), what="nothing held")
    assert h.stop() is ExitCode.OK
    assert [r.job_id for r in h.api.posted] == ["again"]
    assert h.api.results["again"].output == {"copy": 1}
    assert h.model.runs == 1


class ReturnsWhenReleased:
    def __init__(self) -> None:
        self.release = threading.Event()

    def load(self) -> None:
        pass

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        self.release.wait(30)  # ignores its cancel check
        return {"late": True}


def test_a_model_that_returns_after_the_worker_gave_up_on_it_gets_exactly_one_result(
    tmp_path: Path,
) -> None:
    model = ReturnsWhenReleased()
    policy = LifecyclePolicy(idle_ttl=None, execution_timeout=0.05, overrun_grace=0.05)
    h = make_harness(tmp_path, model=model, policy=policy).start()
    h.api.submit({}, job_id="stuck")
    assert h.api.wait_for_results(1)
    model.release.set()  # the model returns just after the worker reported the job
    assert h.join() is ExitCode.MODEL_STUCK
    assert [r.job_id for r in h.api.posted] == ["stuck"]
    assert h.api.results["stuck"].error == "execution timeout after 50 ms"


class Streamer:
    """Streams the chunks its input lists, then returns nothing."""

    def load(self) -> None:
        pass

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        yield from job_input.get("chunks", [])


class UnpostableApi(InMemoryJobApi):
    """A job API adapter that can never send some values (as an adapter bug would)."""

    def post_stream(self, job_id: str, chunk: Any) -> None:
        if chunk == {"unpostable": True}:
            raise TypeError("this value cannot be sent")
        super().post_stream(job_id, chunk)

    def post_result(self, result: JobResult) -> None:
        if result.output == {"unpostable": True}:
            raise ValueError("this result cannot be sent")
        super().post_result(result)


def test_an_item_the_adapter_can_never_send_fails_its_job_and_never_blocks_the_others(
    tmp_path: Path,
) -> None:
    api = UnpostableApi(SystemClock(), poll_timeout=0.3)
    h = make_harness(tmp_path, model=Streamer(), api=api).start()
    h.api.submit({"chunks": [{"n": 1}, {"unpostable": True}, {"n": 2}]}, job_id="bad-chunk")
    h.api.submit({"chunks": [{"n": 3}]}, job_id="fine")
    assert h.api.wait_for_results(2, timeout=20)
    error = h.api.results["bad-chunk"].error
    assert error is not None and error.startswith("a streamed chunk could not be posted: "), error
    assert "TypeError: this value cannot be sent" in error
    assert h.api.results["fine"].ok
    assert [c for j, c in h.api.streamed if j == "fine"] == [{"n": 3}]
    assert h.stop() is ExitCode.OK


class OneResultFailsForEverApi(InMemoryJobApi):
    """A job API whose job-done endpoint answers 5xx for one job, every time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused = 0

    def post_result(self, result: JobResult) -> None:
        if result.job_id == "refused-for-ever":
            with self._cond:
                self.refused += 1
            raise ApiUnavailable("job-done answered HTTP 503 (for this job only)")
        super().post_result(result)


def test_a_result_the_api_fails_for_ever_never_stalls_the_other_jobs_of_its_lane(
    tmp_path: Path,
) -> None:
    api = OneResultFailsForEverApi(SystemClock(), poll_timeout=0.3)
    h = make_harness(tmp_path, api=api, slots=1).start()  # one slot: one post lane
    h.api.submit({"n": 0}, job_id="refused-for-ever")
    wait_until(lambda: api.refused >= 1, timeout=20, what="the first refused post")
    for n in range(1, 4):
        h.api.submit({"n": n}, job_id=f"after-{n}")
    wait_until(lambda: all(f"after-{n}" in api.results for n in range(1, 4)), timeout=60,
               what="the later jobs' results, past the refused one")
    assert "refused-for-ever" not in api.results
    assert api.refused >= 2  # still retried: kept, never dropped
    assert [r.job_id for r in h.outbox.pending()] == ["refused-for-ever"]
    h.stop()
