"""No secret reaches a log, an error, a result or an exception text, not even in part.

The real worker runs at DEBUG with four known secrets (the job API key, the RunPod API key, the
S3 access key id and secret) through jobs that succeed, fail, time out, hit S3 errors (the
bucket down, then refusing the key) and job API errors (500s, a 401 and a 400 whose bodies echo
the job API key, placed to straddle the excerpt an error message shows), then through a pod
termination whose GraphQL errors echo the RunPod key. Every output (the worker's stdout and
stderr, the results and progress the API received, the outbox journal) is searched for every
6-character piece of every secret.

One exception, by design: a presigned S3 URL carries the access key id in its
``X-Amz-Credential`` parameter (that is how SigV4 works; never the secret). With presigned URLs
(the default) the key id may appear there, in results and in the outbox, and nowhere else; with
``BUCKET_PUBLIC_URLS=true`` results hold no secret at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakeplatform import FakeJobApiServer
from tests.support.fault_kit import LONG_POLL_S, Rig, s3_settings
from tests.support.leak_check import (
    JOB_KEY,
    POD_KEY,
    S3_KEY_ID,
    S3_SECRET,
    assert_no_secret,
    straddling,
)
from tests.support.s3_server import S3ServerFactory

# What a presigned URL holds: X-Amz-Credential=<key id>%2F<date>%2F<region>%2Fs3%2Faws4_request
CREDENTIAL = re.compile(r"X-Amz-Credential=" + re.escape(S3_KEY_ID) + r"(?=%2F|/)")


@pytest.fixture
def secret_rig(tmp_path: Path) -> Iterator[Rig]:
    api = FakeJobApiServer(long_poll_s=LONG_POLL_S, api_key=JOB_KEY, pod_api_key=POD_KEY)
    rig = Rig(root=tmp_path, api=api.start(), api_key=JOB_KEY, pod_api_key=POD_KEY)
    try:
        yield rig
    finally:
        rig.close()


def journal_text(rig: Rig) -> str:
    path = rig.state / "outbox" / "journal.jsonl"
    return path.read_text(errors="replace") if path.exists() else ""


def test_no_piece_of_any_secret_reaches_logs_errors_results_or_the_outbox_at_debug(
    secret_rig: Rig, s3_server_factory: S3ServerFactory
) -> None:
    rig = secret_rig
    s3 = s3_server_factory()
    bucket = s3.create_bucket()
    settings = {
        **s3_settings(s3.endpoint_url, bucket, S3_KEY_ID, S3_SECRET),
        "DEBUG": "true",
        "EXECUTION_TIMEOUT": "1500",
        "RUNPOD_API_KEY": POD_KEY,
        "RUNPOD_API_URL": rig.api.graphql_url,
    }
    worker = rig.start(**settings)
    journal: list[str] = []

    ok = rig.submit({"prompt": "a cat", "_echo": {"artifacts": 2, "progress": 2}})
    rig.wait_result(ok)
    failed = rig.submit({"_echo": {"fail": "the model broke"}})
    rig.wait_result(failed)
    slow = rig.submit({"_echo": {"sleep_ms": 10_000}})
    assert rig.wait_result(slow)["error"] == "execution timeout after 1500 ms"
    bad = rig.api.submit_raw({"id": "bad-input", "input": "not an object"})
    assert bad is not None
    rig.submitted.append(bad)
    rig.wait_result(bad)

    # job API errors: 500s, then a 401 whose body echoes the key
    rig.api.inject_fault("take", status=500, count=2)
    rig.api.inject_fault("take", status=401, body={"error": f"bad key {JOB_KEY}"})
    after_api_errors = rig.submit({"n": 1})
    rig.wait_result(after_api_errors)
    # result posts: two 503s, then a 400 echoing the key across the excerpt's cut
    rig.api.inject_fault("done", status=503, count=2)
    rig.api.inject_fault("done", status=400, body=straddling(JOB_KEY))
    refused = rig.submit({"n": 2})
    rig.wait_result(refused)
    journal.append(journal_text(rig))

    # S3 down, then S3 refusing the key (moto's error bodies name the key id)
    s3.stop()
    s3_down = rig.submit({"_echo": {"artifacts": 1}})
    assert "could not store output" in rig.wait_result(s3_down)["error"]
    s3.start()
    s3.create_bucket(bucket)
    s3.enable_auth()  # from now on the worker's key id is unknown to the server
    refused_key = rig.submit({"_echo": {"artifacts": 1}})
    assert "access denied" in rig.wait_result(refused_key)["error"]
    journal.append(journal_text(rig))
    assert worker.terminate() == 0

    # pod termination refused with GraphQL errors that echo the RunPod key
    rig.api.inject_fault("graphql", errors=[f"invalid key {POD_KEY}",
                                            straddling(POD_KEY)["error"]])
    ender = rig.start(**{**settings, "TERMINATE_IDLE_TIME": "500"})
    assert ender.wait(timeout=30) == 5
    journal.append(journal_text(rig))

    rig.assert_delivered_once()
    results = json.dumps(rig.api.results) + json.dumps(rig.api.progress)
    outbox = "\n".join(journal)
    assert CREDENTIAL.search(json.dumps(rig.api.results[ok])), "presigned URLs were expected"
    for name, text in (("results", results), ("the outbox journal", outbox)):
        assert_no_secret(name, CREDENTIAL.sub("X-Amz-Credential=<key id>", text))
    assert worker.saw("job_input"), "the run was expected at DEBUG"
    for process in rig.workers:
        log = process.log_path.read_text(errors="replace")
        assert_no_secret(f"the log of {process.log_path.name}", log)
    terminate_failed = [e for e in ender.events() if e.get("event") == "terminate_failed"]
    assert terminate_failed and "[redacted]" in terminate_failed[0]["message"]


def test_with_public_urls_results_hold_no_piece_of_any_secret(
    secret_rig: Rig, s3_server_factory: S3ServerFactory
) -> None:
    rig = secret_rig
    s3 = s3_server_factory()
    bucket = s3.create_bucket()
    s3.make_public(bucket)
    worker = rig.start(**s3_settings(s3.endpoint_url, bucket, S3_KEY_ID, S3_SECRET),
                       BUCKET_PUBLIC_URLS="true", DEBUG="true")
    job = rig.submit({"_echo": {"artifacts": 2}})
    output = rig.wait_result(job)["output"]
    assert output["artifacts"] == [f"{s3.endpoint_url}/{bucket}/{job}/{i}.png" for i in (0, 1)]
    assert worker.terminate() == 0
    assert_no_secret("results", json.dumps(rig.api.results))
    assert_no_secret("the outbox journal", journal_text(rig))
    assert_no_secret("the log", worker.log_path.read_text(errors="replace"))
    rig.assert_delivered_once()
