"""A hostile platform: results kept on disk while job-done fails, answers that trickle or never
end, journal records that parse but are not records, job-stop answered at once, SIGHUP.

Issue 11, items 1, 2, 3, 8, 9a and 9c. The real worker process runs against the fake job API
(``rig``) where its faults suffice, and against ``tests.support.hostile_server`` (``hostile``)
for what no polite fake does. Deadlines are generous (a loaded two-core machine): each test
asserts what happened, not how fast.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import psutil
import pytest

from tests.support.fault_kit import Rig
from tests.support.harness import eventually
from tests.support.hostile_server import Answer, Endless, HostileRig, Trickle
from tests.support.worker_process import WorkerProcess

RESTARTED = "worker restarted"
RSS_LIMIT = 400 * 1024 * 1024


def warnings_in(worker: WorkerProcess) -> list[dict[str, object]]:
    return [e for e in worker.events() if e.get("level") in ("warning", "error")]


def exit_within(worker: WorkerProcess, timeout: float) -> int | None:
    """The exit code, or None when the process is still alive after ``timeout`` seconds."""
    eventually(lambda: worker.proc.poll() is not None, timeout)
    return worker.proc.poll()


# --- 1: finished results are written down when the job finishes ----------------------------
def test_every_finished_result_is_on_disk_when_its_job_finishes_so_a_sigkill_while_job_done_fails_loses_none(  # noqa: E501
    rig: Rig,
) -> None:
    # every post is held 30 s, then refused: a delivery thread that writes a result down only
    # when it gets to it spends minutes on each earlier one's retries first
    rig.api.inject_fault("done", delay_s=30, status=500, count=100_000)
    first = rig.start(JOB_API_TIMEOUT="5000")
    jobs = [rig.submit({"n": n}) for n in range(6)]
    rig.api.wait_until(lambda s: len(s.taken) >= len(jobs), 30)
    # each echo job is done at once, so each result is on disk at once (15 s: a loaded machine)
    eventually(lambda: len(rig.kept_results()) >= len(jobs), 15)
    kept = len(rig.kept_results())
    assert first.kill() == -signal.SIGKILL

    rig.api.clear_faults()
    second = rig.start()
    for job in jobs:
        rig.wait_result(job, timeout=60)
    restarted = [job for job in jobs if RESTARTED in str(rig.api.results[job].get("error"))]
    assert not restarted, (
        f"{len(restarted)} of {len(jobs)} finished jobs reported as '{RESTARTED}' after a "
        f"SIGKILL ({kept} results were in the outbox 15 s after all were taken)"
    )
    assert [rig.api.results[job] for job in jobs] == [{"output": {"n": n}} for n in range(6)]
    assert second.terminate() == 0
    rig.assert_delivered_once()


# --- 2: every request has an overall deadline --------------------------------------------
def test_a_job_done_that_trickles_is_abandoned_at_its_deadline_and_every_result_is_delivered_as_an_output(  # noqa: E501
    hostile: HostileRig,
) -> None:
    hostile.api.script("done", Trickle(), Trickle(), Trickle())
    worker = hostile.start(JOB_API_TIMEOUT="2000")
    jobs = [hostile.api.submit({"n": n}, f"trickled-{n}") for n in range(3)]
    delivered = hostile.api.wait_until(lambda s: all(j in s.accepted for j in jobs), 60)
    assert delivered, (
        f"only {sorted(hostile.api.accepted)} of {jobs} delivered in 60 s: a job-done that "
        "trickles a byte a second was never abandoned (JOB_API_TIMEOUT=2000 ms)"
    )
    for n, job in enumerate(jobs):
        assert hostile.api.accepted[job] == [{"output": {"n": n}}]
        assert not [p for p in hostile.api.posts_for(job) if "error" in p], "posted as an error"
    assert worker.terminate(timeout=30) == 0


def test_a_take_that_trickles_is_abandoned_at_its_deadline_and_the_next_take_gets_a_job_that_runs(
    hostile: HostileRig,
) -> None:
    hostile.api.script("take", Trickle())
    worker = hostile.start(JOB_TAKE_TIMEOUT="3000")
    assert hostile.api.wait_until(lambda s: len(s.requests_to("take")) >= 1, 30)
    job = hostile.api.submit({"n": 1}, "after-a-trickled-take")
    ran = hostile.api.wait_until(lambda s: job in s.accepted, 45)
    takes = len(hostile.api.requests_to("take"))
    assert ran, f"no result in 45 s ({takes} take(s) asked): a trickling take was never abandoned"
    assert hostile.api.accepted[job] == [{"output": {"n": 1}}]
    assert worker.terminate(timeout=30) == 0


def test_sigterm_while_a_take_trickles_exits_0_promptly(hostile: HostileRig) -> None:
    hostile.api.always("take", Trickle())
    worker = hostile.start(JOB_TAKE_TIMEOUT="95000")
    assert hostile.api.wait_until(lambda s: len(s.requests_to("take")) >= 1, 30)
    worker.wait_for("model_loaded")
    worker.proc.send_signal(signal.SIGTERM)
    code = exit_within(worker, 20)
    assert code == 0, f"exit code {code} (None: still running 20 s after SIGTERM)"


def test_a_ping_that_trickles_does_not_stop_the_heartbeat_and_jobs_still_run(
    hostile: HostileRig,
) -> None:
    hostile.api.script("ping", Trickle())
    worker = hostile.start(JOB_API_TIMEOUT="2000", RUNPOD_PING_INTERVAL="500")
    job = hostile.api.submit({"n": 1}, "while-a-ping-trickles")
    assert hostile.api.wait_until(lambda s: job in s.accepted, 30), "the job did not run"
    beating = hostile.api.wait_until(lambda s: len(s.requests_to("ping")) >= 4, 30)
    pings = len(hostile.api.requests_to("ping"))
    assert beating, f"{pings} ping(s) in 30 s at a 500 ms interval: the heartbeat stopped"
    assert worker.terminate(timeout=30) == 0


# --- 3: answers are read with a size cap ----------------------------------------------------
def test_an_endless_take_answer_is_cut_off_memory_stays_bounded_a_warning_is_logged_and_the_next_job_runs(  # noqa: E501
    hostile: HostileRig,
) -> None:
    hostile.api.script("take", Endless())
    # a take holds one job here (no batch): its answer cannot be much over MAX_INPUT_BYTES
    worker = hostile.start(JOB_TAKE_TIMEOUT="30000", MAX_INPUT_BYTES="100000")
    assert hostile.api.wait_until(lambda s: len(s.requests_to("take")) >= 1, 30)
    job = hostile.api.submit({"n": 1}, "after-an-endless-take")
    process = psutil.Process(worker.proc.pid)
    peak = 0
    deadline = time.monotonic() + 60
    pause = threading.Event()
    while job not in hostile.api.accepted and time.monotonic() < deadline:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if peak > RSS_LIMIT:
            worker.kill()  # before it takes this shared machine's memory
            break
        pause.wait(0.05)
    served = hostile.api.endless_served // (1024 * 1024)
    assert peak <= RSS_LIMIT, (
        f"worker RSS reached {peak // (1024 * 1024)} MB reading an endless take answer "
        f"({served} MB sent)"
    )
    assert job in hostile.api.accepted, f"the next job did not run (exit {worker.proc.poll()})"
    assert hostile.api.accepted[job] == [{"output": {"n": 1}}]
    assert warnings_in(worker), "no warning about the oversized take answer"
    assert worker.terminate(timeout=30) == 0


# --- 8: journal records that parse but are not records ----------------------------------------
NOT_RECORDS = {
    "infinity": '{"put": {"id": "infinite", "output": Infinity}}',
    "nested past the recursion limit": '{"put": ' + "[" * 5000 + "]" * 5000 + "}",
}


@pytest.mark.parametrize("bad", sorted(NOT_RECORDS))
def test_a_journal_record_that_parses_but_is_not_a_record_is_skipped_with_a_warning_and_the_kept_result_is_delivered(  # noqa: E501
    hostile: HostileRig, bad: str
) -> None:
    outbox = hostile.state / "outbox"
    outbox.mkdir(parents=True)
    kept = json.dumps({"put": {"id": "kept-1", "output": {"n": 1}}})
    (outbox / "journal.jsonl").write_text(f"{NOT_RECORDS[bad]}\n{kept}\n")
    worker = hostile.start()
    up = hostile.api.wait_until(
        lambda s: "kept-1" in s.accepted or worker.proc.poll() is not None, 30)
    assert worker.proc.poll() is None, (
        f"the worker exited {worker.proc.poll()} at start on the journal:\n"
        + worker.log_path.read_text()[-600:]
    )
    assert up and hostile.api.accepted["kept-1"] == [{"output": {"n": 1}}]
    job = hostile.api.submit({"n": 2}, "after-a-bad-journal")
    assert hostile.api.wait_until(lambda s: job in s.accepted, 30), "no job taken after start"
    bodies = [s.body for s in hostile.api.requests_to("done")]
    assert not [b for b in bodies if b"Infinity" in b], f"a non-JSON number was posted: {bodies}"
    assert warnings_in(worker), "the record skipped was not warned about"
    assert worker.terminate(timeout=30) == 0


# --- 9a: after SIGTERM the job-stop poller does not spin ------------------------------------
def test_after_sigterm_with_a_job_running_the_job_stop_poll_is_not_hammered(
    hostile: HostileRig,
) -> None:
    hostile.api.stop_hold_s = 0  # job-stop answers 204 at once, as a platform may
    worker = hostile.start()
    job = hostile.api.submit({"_echo": {"sleep_ms": 3000}, "n": 1}, "running-at-sigterm")
    worker.wait_for("job_taken", job_id=job)
    sent = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    code = exit_within(worker, 30)
    ended = time.monotonic()
    polls = len(hostile.api.requests_to("stop", since=sent, until=ended))
    assert code == 0, f"exit code {code}"
    assert hostile.api.accepted.get(job) == [{"output": {"n": 1}}]
    assert polls < 50, f"{polls} job-stop requests in the {ended - sent:.1f} s after SIGTERM"


# --- 9c: SIGHUP is a stop request -----------------------------------------------------------
def test_sighup_is_treated_like_sigterm_logged_and_exits_0(rig: Rig) -> None:
    worker = rig.start()
    rig.wait_result(rig.submit({"n": 1}))
    worker.proc.send_signal(signal.SIGHUP)
    code = exit_within(worker, 20)
    assert code == 0, f"exit code {code} after SIGHUP (-1: killed by it, no log line)"
    assert worker.saw("stop_requested")
    rig.assert_delivered_once()


def test_a_hostile_server_answer_is_used_once(hostile: HostileRig) -> None:
    """The server's own promise the tests above rely on: a scripted answer is used once."""
    hostile.api.script("done", Answer(500, {"error": "later"}))
    worker = hostile.start()
    job = hostile.api.submit({"n": 1}, "scripted-once")
    assert hostile.api.wait_until(lambda s: job in s.accepted, 30)
    assert hostile.api.posts_for(job) == [{"output": {"n": 1}}] * 2
    assert worker.terminate(timeout=30) == 0
