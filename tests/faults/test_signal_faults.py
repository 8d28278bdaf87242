"""Signals: SIGTERM during a job and while idle; SIGKILL at each stage of a job, then a restart.

SIGTERM is the platform stopping the container (a graceful stop: exit 0). SIGKILL is a crash
(out of host memory, a node lost): nothing runs, and the next process must pick up from what
the outbox kept on disk.
"""

from __future__ import annotations

import signal
import subprocess

from fakeplatform import FakeJobApiServer
from tests.support.fault_kit import Rig, poll_until, s3_settings
from tests.support.s3_server import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, S3Server
from tests.support.worker_process import JOB_API_KEY, RUNPOD_KEY

RESTARTED = "worker restarted while running this job (the worker process died)"


def test_sigterm_during_a_job_delivers_that_job_takes_no_other_and_exits_0(
    rig: Rig, s3_server: S3Server, s3_bucket: str
) -> None:
    settings = s3_settings(s3_server.endpoint_url, s3_bucket, FAKE_ACCESS_KEY_ID,
                           FAKE_SECRET_ACCESS_KEY)
    worker = rig.start(**settings)
    running = rig.submit({"_echo": {"sleep_ms": 1500, "artifacts": 2}})
    rig.wait_taken(running)
    queued = rig.submit({"n": 2})
    assert worker.terminate(timeout=20) == 0
    output = rig.api.results[running]["output"]
    assert len(output["artifacts"]) == 2
    assert s3_server.keys(s3_bucket) == [f"{running}/0.png", f"{running}/1.png"]
    assert rig.api.status(queued) == {"id": queued, "status": "IN_QUEUE"}  # left for others

    successor = rig.start(**settings)
    assert rig.wait_result(queued) == {"output": {"n": 2}}
    assert successor.terminate() == 0
    rig.assert_delivered_once()


def test_sigterm_while_idle_exits_0_and_says_why(rig: Rig) -> None:
    # How promptly a take held long is let go: the next test (a 20 s long poll).
    worker = rig.start()
    rig.wait_result(rig.submit({"n": 1}))
    takes = rig.api.requests["take"]
    rig.api.wait_until(lambda s: s.requests["take"] > takes, 5)  # idle, in a take
    assert worker.terminate(timeout=10) == 0
    assert worker.saw("exit", reason="SIGTERM received")
    rig.assert_delivered_once()


def test_sigterm_while_idle_exits_promptly_even_when_the_server_holds_the_take_long(
    rig: Rig,
) -> None:
    # The behaviour, not a time: the held take is let go instead of waited out (the process
    # ends well before the server's 20 s long-poll could answer it), the exit code is 0, and
    # nothing was lost. The deadline allows for a loaded machine; the benchmark measures speed.
    slow = FakeJobApiServer(long_poll_s=20, api_key=JOB_API_KEY, pod_api_key=RUNPOD_KEY).start()
    rig.api.stop()
    rig.api = slow
    worker = rig.start()
    assert slow.wait_until(lambda s: s.requests["take"] >= 1, 10)  # idle, in a 20 s take
    worker.wait_for("model_loaded")
    worker.proc.send_signal(signal.SIGTERM)
    try:
        code = worker.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        code = None
    assert code == 0, "still waiting for the take's answer 15 s after SIGTERM"
    assert worker.saw("exit", reason="SIGTERM received")
    assert slow.stats()["queued"] == 0 and slow.taken == []
    rig.assert_delivered_once()


def test_sigkill_while_waiting_for_a_take_then_restart_loses_nothing(rig: Rig) -> None:
    first = rig.start()
    rig.wait_result(rig.submit({"n": 1}))
    # the take in flight at the kill is held by the API and hands out no job
    rig.api.inject_fault("take", delay_s=3, status=204)
    rig.api.wait_until(lambda s: s.faults_served >= 1, 10)
    assert first.kill() == -signal.SIGKILL
    assert rig.kept_results() == [] and rig.running_marks() == []

    second = rig.start()
    job = rig.submit({"n": 2})
    assert rig.wait_result(job) == {"output": {"n": 2}}
    assert second.terminate() == 0
    rig.assert_delivered_once()
    rig.assert_polite()


def test_sigkill_while_the_model_runs_then_restart_reports_the_job_failed_once(
    rig: Rig,
) -> None:
    first = rig.start()
    job = rig.submit({"_echo": {"sleep_ms": 60_000}})
    first.wait_for("job_taken", job_id=job)
    assert first.kill() == -signal.SIGKILL
    assert job not in rig.api.results
    assert rig.running_marks() == [job]

    second = rig.start()
    assert rig.wait_result(job) == {"error": RESTARTED}
    after = rig.submit({"n": 2})
    assert rig.wait_result(after) == {"output": {"n": 2}}
    assert second.terminate() == 0
    rig.assert_delivered_once()
    rig.assert_polite()


def test_sigkill_after_the_result_is_in_the_outbox_then_restart_delivers_that_result_once(
    rig: Rig, s3_server: S3Server, s3_bucket: str
) -> None:
    settings = s3_settings(s3_server.endpoint_url, s3_bucket, FAKE_ACCESS_KEY_ID,
                           FAKE_SECRET_ACCESS_KEY)
    rig.api.inject_fault("done", status=503, count=100_000)
    first = rig.start(**settings)
    job = rig.submit({"_echo": {"artifacts": 2}})
    poll_until(lambda: bool(rig.kept_results()), 30, "the result in the outbox")
    assert first.kill() == -signal.SIGKILL
    [kept] = rig.kept_results()
    assert kept.job_id == job and len(kept.output["artifacts"]) == 2

    rig.api.clear_faults()
    second = rig.start(**settings)
    assert rig.wait_result(job) == {"output": kept.output}  # the same URLs, not a re-run
    assert second.terminate() == 0
    rig.assert_delivered_once()
    rig.assert_polite()


def test_sigkill_while_the_result_post_is_in_flight_then_restart_delivers_it_once(
    rig: Rig,
) -> None:
    # the API holds the post 5 s, then refuses it: it is in flight when the worker dies
    rig.api.inject_fault("done", delay_s=5, status=503)
    first = rig.start()
    job = rig.submit({"n": 1})
    rig.api.wait_until(lambda s: s.faults_served >= 1, 20)
    assert first.kill() == -signal.SIGKILL
    assert [result.job_id for result in rig.kept_results()] == [job]

    second = rig.start()
    assert rig.wait_result(job) == {"output": {"n": 1}}
    assert second.terminate() == 0
    rig.assert_delivered_once()
    rig.assert_polite()
