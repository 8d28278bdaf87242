"""The whole loop with in-memory fakes: jobs flow, failures become results, the pod's life ends
when the policy says, and nothing is lost on a stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.stages import ExitCode
from domain.errors import InvalidInput
from domain.job import JobResult
from domain.lifecycle import LifecyclePolicy
from domain.ports import JobContext
from tests.support.harness import make_harness, wait_until


def test_a_job_flows_through_and_its_input_comes_back(tmp_path: Path) -> None:
    h = make_harness(tmp_path).start()
    h.api.submit({"prompt": "hello"}, job_id="j1")
    assert h.api.wait_for_results(1)
    assert h.api.results["j1"] == JobResult.success("j1", {"prompt": "hello"})
    assert h.stop() is ExitCode.OK


def test_the_model_is_loaded_once_before_the_first_job(tmp_path: Path) -> None:
    h = make_harness(tmp_path).start()
    for n in range(5):
        h.api.submit({"n": n})
    assert h.api.wait_for_results(5)
    h.stop()
    assert h.model.loaded == 1
    assert h.model.runs == 5


def test_a_failing_model_gives_an_error_result_and_the_next_job_still_runs(tmp_path: Path) -> None:
    h = make_harness(tmp_path).start()
    h.api.submit({"_echo": {"fail": "boom"}}, job_id="bad")
    h.api.submit({"ok": True}, job_id="good")
    assert h.api.wait_for_results(2)
    h.stop()
    assert h.api.results["bad"].error == "RuntimeError: boom"
    assert h.api.results["good"].output == {"ok": True}


class RaisingModel:
    """Raises whatever exception it was built with, for every job."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def load(self) -> None:
        pass

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (InvalidInput("invalid input: width: must be a multiple of 8"),
         "invalid input: width: must be a multiple of 8"),
        (KeyError("prompt"), "KeyError: 'prompt'"),
        (ZeroDivisionError(), "ZeroDivisionError"),
        (MemoryError("too big"), "MemoryError: too big"),
    ],
)
def test_any_exception_from_the_model_becomes_a_clear_error_string(
    tmp_path: Path, exc: BaseException, expected: str
) -> None:
    h = make_harness(tmp_path, model=RaisingModel(exc)).start()
    h.api.submit({}, job_id="j")
    assert h.api.wait_for_results(1)
    h.stop()
    assert h.api.results["j"].error == expected


def test_a_job_with_a_malformed_envelope_is_answered_without_running_the_model(
    tmp_path: Path,
) -> None:
    h = make_harness(tmp_path).start()
    h.api.submit_raw({"id": "list-input", "input": [1, 2]})
    h.api.submit_raw({"id": "no-input"})
    h.api.submit_raw({"input": {"no": "id"}})
    h.api.submit_raw("not an object")
    h.api.submit({"fine": 1}, job_id="fine")
    assert h.api.wait_for_results(3)
    h.stop()
    assert h.api.results["list-input"].error == (
        "invalid input: input must be a JSON object, got a JSON array"
    )
    assert h.api.results["no-input"].error == (
        'invalid input: input must be a JSON object, got missing: send the job as '
        '{"input": {...}}, its fields inside "input"'
    )
    assert h.api.results["fine"].ok
    assert h.model.runs == 1
    assert len(h.api.rejected) == 2


def test_an_input_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    h = make_harness(tmp_path, max_input_bytes=100).start()
    h.api.submit({"blob": "x" * 200}, job_id="huge")
    assert h.api.wait_for_results(1)
    h.stop()
    error = h.api.results["huge"].error or ""
    assert error.startswith("invalid input: input is ") and "over the limit of 100 bytes" in error


def test_artifacts_are_stored_and_replaced_by_their_references(tmp_path: Path) -> None:
    h = make_harness(tmp_path).start()
    h.api.submit({"_echo": {"artifacts": 2}}, job_id="../../escape")
    assert h.api.wait_for_results(1)
    h.stop()
    refs = h.api.results["../../escape"].output["artifacts"]
    assert len(refs) == 2
    for index, ref in enumerate(refs):
        path = Path(ref)
        assert path.name == f"{index}.png"
        assert path.read_bytes().startswith(b"\x89PNG")
        assert (tmp_path / "outputs") in path.parents


def test_a_result_too_large_for_the_job_api_becomes_an_error_that_says_to_configure_a_bucket(
    tmp_path: Path,
) -> None:
    h = make_harness(tmp_path, max_result_bytes=1000).start()
    h.api.submit({"text": "x" * 5000}, job_id="big")
    assert h.api.wait_for_results(1)
    h.stop()
    error = h.api.results["big"].error or ""
    assert "over the job API's limit of 1000 bytes" in error and "bucket" in error


def test_progress_updates_arrive_in_order_and_never_after_the_result(tmp_path: Path) -> None:
    h = make_harness(tmp_path).start()
    h.api.submit({"_echo": {"progress": 5}}, job_id="p")
    assert h.api.wait_for_results(1)
    h.stop()
    steps = [update["step"] for job_id, update in h.api.progress if job_id == "p"]
    assert steps == sorted(steps) and len(steps) >= 1
    # the result was the last thing sent for the job: no progress recorded after it
    assert len(h.api.progress) == len([p for p in h.api.progress if p[0] == "p"])


def test_heartbeat_carries_the_job_in_flight(tmp_path: Path) -> None:
    h = make_harness(tmp_path, ping_interval_s=0.01).start()
    h.api.submit({"_echo": {"sleep_ms": 300}}, job_id="slow")
    wait_until(lambda: ("slow",) in h.api.pings, what="a ping naming the running job")
    assert h.api.wait_for_results(1)
    h.stop()
    assert () in h.api.pings  # idle pings carry no job


def test_a_work_timeout_fails_the_job_and_the_next_job_runs(tmp_path: Path) -> None:
    policy = LifecyclePolicy(idle_ttl=None, execution_timeout=0.1)
    h = make_harness(tmp_path, policy=policy).start()
    h.api.submit({"_echo": {"sleep_ms": 5000}}, job_id="slow")
    h.api.submit({"fast": True}, job_id="fast")
    assert h.api.wait_for_results(2)
    h.stop()
    assert h.api.results["slow"].error == "execution timeout after 100 ms"
    assert h.api.results["fast"].ok


def test_a_model_that_ignores_its_timeout_is_reported_and_the_worker_exits_with_code_3(
    tmp_path: Path,
) -> None:
    policy = LifecyclePolicy(idle_ttl=None, execution_timeout=0.05, overrun_grace=0.05)
    h = make_harness(tmp_path, policy=policy).start()
    h.api.submit({"_echo": {"sleep_ms": 3000, "ignore_cancel": True}}, job_id="stuck")
    assert h.join() is ExitCode.MODEL_STUCK
    assert h.api.results["stuck"].error == "execution timeout after 50 ms"
    assert len(h.api.posted) == 1


def test_a_job_stop_request_cancels_the_running_job_and_nothing_is_posted_for_it(
    tmp_path: Path,
) -> None:
    h = make_harness(tmp_path).start()
    h.api.submit({"_echo": {"sleep_ms": 10_000, "progress": 1}}, job_id="long")
    wait_until(lambda: h.model.runs >= 1, what="the job to start")
    h.api.request_stop("long")
    wait_until(lambda: h.worker.snapshot.in_flight == (), what="the stopped job to be let go")
    h.api.submit({"after": 1}, job_id="next")
    assert h.api.wait_for_results(1)
    h.stop()
    assert "long" not in h.api.results  # as RunPod's SDK does: the platform stopped it
    assert h.api.results["next"].ok


def test_a_stop_request_that_arrives_before_its_job_still_stops_it(tmp_path: Path) -> None:
    h = make_harness(tmp_path).start()
    h.api.request_stop("early")  # the platform's stop overtakes the take's answer
    wait_until(lambda: h.api.stops_pending == 0, what="the stop request to be read")
    h.api.submit({"_echo": {"sleep_ms": 10_000}}, job_id="early")
    wait_until(lambda: "early" in h.api.taken, what="the job to be taken")
    wait_until(lambda: h.worker.snapshot.in_flight == (), what="the stopped job to be let go")
    h.stop()
    assert "early" not in h.api.results and h.model.runs == 0


def test_stop_mid_job_still_posts_that_jobs_result_and_exits_0(tmp_path: Path) -> None:
    h = make_harness(tmp_path).start()
    h.api.submit({"_echo": {"sleep_ms": 200}}, job_id="mid")
    h.api.submit({}, job_id="never-taken")
    wait_until(lambda: h.model.runs >= 1, what="the job to start")
    h.worker.request_stop("SIGTERM received")
    assert h.join() is ExitCode.OK
    assert h.api.results["mid"].ok
    assert "never-taken" not in h.api.taken
    assert h.api.queued == 1
