"""Delivery failing: result posts refused for longer than every retry, the bucket going away.

The real worker process stores two small images per job in a moto S3 server on loopback and
posts results to the fake job API.
"""

from __future__ import annotations

import pytest
import requests

from tests.support.fault_kit import Rig, poll_until, s3_settings
from tests.support.s3_server import (
    FAKE_ACCESS_KEY_ID,
    FAKE_SECRET_ACCESS_KEY,
    S3Server,
    S3ServerFactory,
)

TWO_IMAGES = {"_echo": {"artifacts": 2}}
PNG_MAGIC = b"\x89PNG"


def s3_env(server: S3Server, bucket: str) -> dict[str, str]:
    return s3_settings(server.endpoint_url, bucket, FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY)


def assert_images_fetchable(output: dict[str, object]) -> None:
    urls = output["artifacts"]
    assert isinstance(urls, list) and len(urls) == 2
    for url in urls:
        answer = requests.get(str(url), timeout=5)
        assert answer.status_code == 200 and answer.content.startswith(PNG_MAGIC)


@pytest.mark.slow
def test_a_result_refused_longer_than_every_retry_waits_in_the_outbox_and_is_delivered_once_when_the_api_accepts_it(  # noqa: E501
    rig: Rig, s3_server: S3Server, s3_bucket: str
) -> None:
    rig.api.inject_fault("done", status=503, count=100_000)
    worker = rig.start(**s3_env(s3_server, s3_bucket))
    first = rig.submit(TWO_IMAGES)
    rig.wait_taken(first)
    second = rig.submit({**TWO_IMAGES, "n": 2})

    # the post stage defers a refused result on its own schedule; the result stays put, and
    # the next job's result joins it in the outbox rather than waiting in memory (the two
    # jobs' uploads run side by side, so either result may be refused first)
    worker.wait_for("result_deferred", timeout=60)
    poll_until(lambda: first in {r.job_id for r in rig.kept_results()}, 30,
               "the first result in the outbox")
    kept = {result.job_id: result for result in rig.kept_results()}
    assert first in kept and set(kept) <= {first, second}
    assert first not in rig.api.results
    posts = rig.api.requests["done"]
    assert 1 <= posts <= 12, f"{posts} posts to a failing API before the first deferral"
    assert worker.proc.poll() is None

    rig.api.clear_faults()
    assert rig.wait_result(first, timeout=30) == {"output": kept[first].output}
    rig.wait_result(second, timeout=30)
    assert_images_fetchable(rig.api.results[first]["output"])
    assert_images_fetchable(rig.api.results[second]["output"])
    assert worker.terminate() == 0
    rig.assert_delivered_once()
    rig.assert_polite()


def test_s3_going_down_during_a_job_fails_that_job_naming_the_bucket_and_the_next_job_stores_again(
    rig: Rig, s3_server_factory: S3ServerFactory
) -> None:
    s3 = s3_server_factory()
    bucket = s3.create_bucket()
    worker = rig.start(**s3_env(s3, bucket))
    stranded = rig.submit({"_echo": {"sleep_ms": 800, "artifacts": 2}})
    rig.wait_taken(stranded)
    s3.stop()  # connections to the bucket are refused from now on

    error = rig.wait_result(stranded, timeout=30)["error"]
    assert error.startswith("could not store output ")
    assert f"bucket '{bucket}' at {s3.endpoint_url}" in error
    assert "after 5 attempts: could not reach S3" in error
    retries = [e for e in worker.events() if e.get("event") == "storage_retry"]
    assert 2 <= len(retries) <= 10, "five attempts per image at most"
    assert worker.proc.poll() is None

    s3.start()  # same port; moto forgets its buckets
    s3.create_bucket(bucket)
    fine = rig.submit(TWO_IMAGES)
    output = rig.wait_result(fine, timeout=30)["output"]
    assert_images_fetchable(output)
    assert s3.keys(bucket) == [f"{fine}/0.png", f"{fine}/1.png"]
    assert worker.terminate() == 0
    rig.assert_delivered_once()
    rig.assert_polite()
