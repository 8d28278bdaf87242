"""A hostile S3 endpoint (issue 26, items 2 and 5): one that trickles its answer, one that
answers with an endless body.

botocore's timeouts bound each read, not a call, and it reads answers whole: a trickling S3 held
the store stage for ever (a later job that stored nothing was never written down, and lost), an
endless answer grew the process by gigabytes. Every S3 call now ends at ``BUCKET_TIMEOUT``
(plus a second per MB sent) and reads at most 1 MB of answer; uploads run beside the store
stage, so a hung one holds only its own job; the shutdown message says what really happens.
"""

from __future__ import annotations

import time

import psutil
import pytest

from adapters.s3.storage import S3Storage
from domain.errors import UploadFailed
from domain.job import Artifact
from tests.support.fault_kit import Rig, poll_until, s3_settings
from tests.support.hostile_s3 import HostileS3

KEY_ID, SECRET = "AKIAHOSTILES3KEY0001", "hostile-s3-secret-key-5b1d2e8f"
RESTARTED = "worker restarted while running this job (the worker process died)"
MOST_RSS = 400 * 2**20


def bucket_settings(s3: HostileS3, **extra: str) -> dict[str, str]:
    return {**s3_settings(s3.url, "outputs", KEY_ID, SECRET), **extra}


def test_every_s3_call_ends_at_its_deadline_however_slowly_s3_answers(
    hostile_s3: HostileS3,
) -> None:
    hostile_s3.mode = "trickle"
    waits: list[float] = []
    storage = S3Storage(endpoint_url=hostile_s3.url, access_key_id=KEY_ID,
                        secret_access_key=SECRET, bucket="outputs", timeout_s=0.5,
                        sleep=waits.append)
    started = time.monotonic()
    try:
        with pytest.raises(UploadFailed, match=r"after 5 attempts: S3 did not answer within"):
            storage.store("job", 0, Artifact(b"\x89PNG"))
    finally:
        storage.close()
    assert hostile_s3.puts() == 5
    assert time.monotonic() - started < 5 * 0.5 + 10  # five deadlines, slack for a loaded box


def test_a_trickling_s3_holds_only_the_job_that_uploads_and_its_upload_ends_at_the_deadline(
    rig: Rig, hostile_s3: HostileS3,
) -> None:
    hostile_s3.mode = "trickle"
    worker = rig.start(**bucket_settings(hostile_s3, BUCKET_TIMEOUT="1000"))
    uploading = rig.submit({"_echo": {"artifacts": 1}})
    poll_until(lambda: hostile_s3.puts() >= 1, 30, "the upload to start")
    plain = rig.submit({"n": "stores nothing"})
    assert rig.wait_result(plain) == {"output": {"n": "stores nothing"}}
    error = rig.wait_result(uploading, timeout=60)["error"]
    assert "after 5 attempts: S3 did not answer within 1 s" in error, error
    plain_at, uploading_at = rig.api.jobs[plain].done_at, rig.api.jobs[uploading].done_at
    assert plain_at is not None and uploading_at is not None and plain_at < uploading_at
    assert worker.terminate() == 0
    rig.assert_delivered_once()


def test_at_sigterm_a_job_still_uploading_is_reported_truly_and_answered_after_the_restart(
    rig: Rig, hostile_s3: HostileS3,
) -> None:
    hostile_s3.mode = "trickle"
    worker = rig.start(**bucket_settings(hostile_s3, BUCKET_TIMEOUT="120000",
                                         SHUTDOWN_GRACE="1000"))
    uploading = rig.submit({"_echo": {"artifacts": 1}})
    poll_until(lambda: hostile_s3.puts() >= 1, 30, "the upload to start")
    plain = rig.submit({"n": "stores nothing"})
    assert rig.wait_result(plain) == {"output": {"n": "stores nothing"}}
    assert worker.terminate(timeout=30) == 0
    said = [e["message"] for e in worker.events() if e.get("level") == "warning"
            and e.get("event") in ("exit_with_outbox", "exit_with_unwritten_results")]
    assert len(said) == 1 and "stay in the outbox" not in said[0], said
    assert worker.saw("exit_with_unwritten_results")
    hostile_s3.mode = "ok"
    successor = rig.start(**bucket_settings(hostile_s3))
    assert rig.wait_result(uploading) == {"error": RESTARTED}
    assert successor.terminate() == 0
    rig.assert_delivered_once()


def test_an_endless_s3_answer_is_cut_off_memory_stays_bounded_and_the_job_fails_clearly(
    rig: Rig, hostile_s3: HostileS3,
) -> None:
    hostile_s3.mode = "endless"
    worker = rig.start(**bucket_settings(hostile_s3, BUCKET_TIMEOUT="5000"))
    process = psutil.Process(worker.proc.pid)
    job = rig.submit({"_echo": {"artifacts": 1}})
    most = 0

    def answered() -> bool:
        nonlocal most
        most = max(most, process.memory_info().rss)
        if most > MOST_RSS:
            worker.proc.kill()
            raise AssertionError(f"the worker grew to {most / 2**20:.0f} MB")
        return job in rig.api.results

    poll_until(answered, 90, "the job's answer", interval=0.1)
    error = rig.api.results[job]["error"]
    assert "S3's answer was over 1048576 bytes" in error, error
    assert most < MOST_RSS
    assert worker.terminate() == 0
