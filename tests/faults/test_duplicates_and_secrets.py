"""The same job handed out more than once, and pieces of keys echoed back by the platform.

Issue 11, items 6 and 7, against ``tests.support.hostile_server`` (a job API that hands out
whatever take answer the test queues and answers what the test scripts).

Duplicates: while the first result of a job waits (job-done answers 500), the take hands the
same id out again, or three copies come in one batch. The job must end with exactly one
accepted result, a real run's output (never a poison-job verdict), pings must stop naming it,
SIGTERM must not wait out its grace, and the idle TTL must fire.

Secrets: every six-character piece of every key must stay out of the log, the journal and
every body posted, even when a server echoes a masked key (``abcd...wxyz`` plus a middle
piece) in a 400/401/403 body or a GraphQL error, and when a model's own error quotes a key.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.support.harness import eventually
from tests.support.hostile_server import Answer, EchoKey, HostileRig, HostileServer
from tests.support.leak_check import JOB_KEY, POD_KEY, leaks
from tests.support.worker_process import WorkerProcess

ONE_JOB = {"n": 1}
HELD = Answer(500, {"error": "try again later"})


BURST = 4  # refused posts of the first result before its copies are handed out


def hand_out_while_the_first_result_waits(
    api: HostileServer, worker: WorkerProcess, job_id: str, later: list[object]
) -> None:
    """Job-done refuses; ``job_id`` is run and its result posted until its first burst of tries
    is over (it now waits in the outbox); then each answer in ``later`` is handed out; once the
    worker has dealt with every copy (a ``duplicate_job`` warning, or each copy's own burst of
    posts), job-done accepts again."""
    api.always("done", HELD)
    api.wait_until(lambda s: len(s.posts_for(job_id)) >= BURST, 30)
    assert api.posts_for(job_id), "the first result was not posted"
    for answer in later:
        api.hand_out(answer)
    assert api.wait_until(lambda s: s.takes_waiting == 0, 30), "the copies were not taken"
    copies = 1 + sum(len(a) if isinstance(a, list) else 1 for a in later)
    # a sync point, not an assertion: the worker has dealt with every copy (or 20 s passed)
    eventually(lambda: worker.saw("duplicate_job") or worker.saw("poison_job")
               or len(api.posts_for(job_id)) >= BURST * copies, 20)
    api.always("done", None)


def assert_answered_once_and_forgotten(api: HostileServer, worker: WorkerProcess,
                                       job_id: str) -> None:
    assert api.wait_until(lambda s: job_id in s.accepted, 45), "never delivered"
    accepted_at = time.monotonic()
    forgotten = api.wait_until(
        lambda s: any(at > accepted_at + 0.1 and not ids for at, ids in s.pings), 20)
    posts = api.posts_for(job_id)
    assert not [p for p in posts if "poison" in str(p.get("error"))], f"poison verdict: {posts}"
    assert api.accepted[job_id] == [{"output": ONE_JOB}], (
        f"accepted results for {job_id}: {api.accepted[job_id]}")
    last = api.pings[-1][1] if api.pings else None
    assert forgotten, f"20 s after delivery, pings still name {last}"
    assert [e for e in worker.events()
            if e.get("event") == "duplicate_job" and e.get("level") == "warning"], (
        "no duplicate_job warning")


def assert_stops_promptly(worker: WorkerProcess) -> None:
    sent = time.monotonic()
    worker.proc.terminate()
    deadline = sent + 20  # SHUTDOWN_GRACE is 60 s
    pause = threading.Event()
    while worker.proc.poll() is None and time.monotonic() < deadline:
        pause.wait(0.05)
    code = worker.proc.poll()
    assert code == 0, f"exit {code} (None: still running {deadline - sent:.0f} s after SIGTERM)"


# --- 6: duplicates -------------------------------------------------------------------------
def test_a_job_handed_out_again_while_its_result_waits_is_answered_once_and_then_forgotten(
    hostile: HostileRig,
) -> None:
    worker = hostile.start(SHUTDOWN_GRACE="60000")
    job = hostile.api.submit(ONE_JOB, "handed-out-twice")
    hand_out_while_the_first_result_waits(
        hostile.api, worker, job, [{"id": job, "input": ONE_JOB}])
    assert_answered_once_and_forgotten(hostile.api, worker, job)
    assert_stops_promptly(worker)


def test_three_copies_of_a_job_in_one_batch_are_answered_once_with_a_real_output(
    hostile: HostileRig,
) -> None:
    worker = hostile.start(SHUTDOWN_GRACE="60000")
    job = "three-in-a-batch"
    hostile.api.always("done", HELD)
    hostile.api.hand_out([{"id": job, "input": ONE_JOB}] * 3)
    assert hostile.api.wait_until(lambda s: len(s.posts_for(job)) >= 1, 30), "nothing posted"
    eventually(lambda: worker.saw("duplicate_job") or worker.saw("poison_job")
               or len(hostile.api.posts_for(job)) >= BURST * 3, 20)
    hostile.api.always("done", None)
    assert_answered_once_and_forgotten(hostile.api, worker, job)
    assert_stops_promptly(worker)


def test_after_a_duplicate_is_delivered_the_idle_ttl_still_terminates_the_pod(
    hostile: HostileRig,
) -> None:
    job = hostile.api.submit(ONE_JOB, "duplicate-then-idle")  # before the idle clock starts
    worker = hostile.start(
        TERMINATE_IDLE_TIME="3000", RUNPOD_API_KEY=POD_KEY, RUNPOD_API_URL=hostile.api.graphql_url,
    )
    hand_out_while_the_first_result_waits(
        hostile.api, worker, job, [{"id": job, "input": ONE_JOB}])
    assert hostile.api.wait_until(lambda s: job in s.accepted, 45), "never delivered"
    terminated = hostile.api.wait_until(lambda s: bool(s.terminations), 30)
    assert terminated, "the idle TTL (3 s) did not fire within 30 s of the delivery"
    assert eventually(lambda: worker.proc.poll() is not None, 20)
    assert worker.proc.poll() == 0


# --- 7: pieces of secrets -------------------------------------------------------------------
def test_no_piece_of_a_key_echoed_by_a_server_or_quoted_by_a_model_leaves_the_process(
    hostile: HostileRig,
) -> None:
    api = hostile.api
    api.script("done", EchoKey(400), EchoKey(401), EchoKey(403))
    api.always("graphql", EchoKey(200, "Unauthorized: API key {masked} is not valid",
                                  graphql=True))
    for n in range(3):
        api.submit({"n": n}, f"echoed-{n}")
    api.submit({"leak_keys": True}, "model-quotes-keys")
    worker = hostile.start(
        MODEL="tests.support.misbehaving_models:misbehaving", RUNPOD_AI_API_KEY=JOB_KEY,
        RUNPOD_API_KEY=POD_KEY, RUNPOD_API_URL=api.graphql_url, TERMINATE_IDLE_TIME="3000",
    )
    assert api.wait_until(lambda s: bool(s.requests_to("graphql")), 60), "no pod termination"
    assert api.wait_until(lambda s: "model-quotes-keys" in s.accepted, 10)
    if not eventually(lambda: worker.proc.poll() is not None, 30):
        worker.kill()
    found = {
        "the log": leaks(worker.log_path.read_text()),
        "the journal": leaks(_read(hostile.state / "outbox" / "journal.jsonl")),
        "bodies posted": leaks(" ".join(s.body.decode("utf-8", "replace") for s in api.seen)),
    }
    assert not any(found.values()), f"secret pieces found: {found}"
    echoed = [s for s in api.seen if s.endpoint in ("done", "graphql")
              and s.headers.get("authorization", "").endswith((JOB_KEY, POD_KEY))]
    assert echoed, "no request carried a key to echo (the test's own premise)"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
