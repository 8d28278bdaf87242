"""The S3 adapter's failures against a real S3-protocol server (moto's server mode) on loopback:
a missing bucket or wrong credentials give a job error that says what to fix, at once;
throttling and server errors are retried; S3 going away mid-job is retried and then reported,
and S3 coming back lets uploads succeed again.
"""

from __future__ import annotations

import threading

import pytest
import requests

from domain.errors import UploadFailed
from domain.job import Artifact
from tests.support.s3_server import (
    FAKE_SECRET_ACCESS_KEY,
    AuthUsers,
    Credentials,
    S3Server,
    S3ServerFactory,
)
from tests.support.s3_storage_kit import (
    FAKE,
    PNG,
    STORAGE_ATTEMPTS,
    WRONG_KEY_ID,
    MakeStorage,
    answer_puts_with,
    assert_no_credential_in,
    closed_port_endpoint,
    exception_texts,
    tiny_png,
)

# --- failures --------------------------------------------------------------------------------


def test_a_missing_bucket_fails_at_once_naming_the_bucket_and_the_endpoint(
    make_storage: MakeStorage, s3_server: S3Server
) -> None:
    waits: list[float] = []
    storage = make_storage("no-such-bucket-here", sleep=waits.append)

    with pytest.raises(UploadFailed) as failed:
        storage.store("job-1", 0, PNG)

    assert str(failed.value) == (
        f"bucket 'no-such-bucket-here' does not exist at {s3_server.endpoint_url}"
    )
    assert waits == []  # not worth retrying


def test_check_passes_for_an_existing_bucket_and_names_a_missing_one(
    make_storage: MakeStorage, s3_server: S3Server, s3_bucket: str
) -> None:
    make_storage(s3_bucket).check()  # raises when the bucket is not usable
    with pytest.raises(UploadFailed, match="bucket 'absent-bucket' does not exist at http://"):
        make_storage("absent-bucket").check()


def test_with_authentication_on_the_right_credentials_store_and_check(
    make_storage: MakeStorage, auth_server: tuple[S3Server, AuthUsers, str]
) -> None:
    server, users, bucket = auth_server
    storage = make_storage(bucket, server=server, credentials=users.allowed)

    storage.store("job-1", 0, PNG)

    storage.check()  # raises when the bucket is not usable
    listed = server.client(credentials=users.allowed).list_objects_v2(Bucket=bucket)
    assert [item["Key"] for item in listed["Contents"]] == ["job-1/0.png"]


@pytest.mark.parametrize("wrong", ["access key id", "secret", "permissions"])
def test_wrong_credentials_fail_at_once_with_a_message_saying_what_to_check(
    make_storage: MakeStorage, auth_server: tuple[S3Server, AuthUsers, str], wrong: str
) -> None:
    server, users, bucket = auth_server
    credentials = {
        "access key id": Credentials(WRONG_KEY_ID, users.allowed.secret_access_key),
        "secret": Credentials(users.allowed.access_key_id, "wrong" + FAKE_SECRET_ACCESS_KEY),
        "permissions": users.no_policy,
    }[wrong]
    waits: list[float] = []
    storage = make_storage(bucket, server=server, credentials=credentials, sleep=waits.append)

    expected = (
        f"access denied to bucket '{bucket}' at {server.endpoint_url}: "
        "check BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY"
    )
    with pytest.raises(UploadFailed) as stored:
        storage.store("job-1", 0, PNG)
    with pytest.raises(UploadFailed) as checked:
        storage.check()

    assert str(stored.value).startswith(expected)
    assert str(checked.value).startswith(expected)
    assert waits == []
    assert_no_credential_in(
        [str(stored.value), str(checked.value)], [credentials, users.allowed, FAKE]
    )


def test_throttling_and_server_errors_are_retried_with_backoff_then_succeed(
    make_storage: MakeStorage, s3_bucket: str
) -> None:
    waits: list[float] = []
    storage = make_storage(s3_bucket, sleep=waits.append)
    sent = answer_puts_with(storage, [(503, "SlowDown"), (500, "InternalError")])

    url = storage.store("job-1", 0, PNG)

    assert len(sent) == 3 and len(waits) == 2
    assert all(0 < wait <= 5 for wait in waits)
    assert requests.get(url, timeout=5).content == PNG.data


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (403, "InvalidAccessKeyId", "access denied to bucket"),
        (403, "SignatureDoesNotMatch", "access denied to bucket"),
        (404, "NoSuchBucket", "does not exist at"),
        (403, "RequestTimeTooSkewed", "this machine's clock is off"),
        (400, "EntityTooLarge", "S3 refused the request for bucket"),
    ],
)
def test_aws_error_answers_map_to_clear_errors_built_from_the_code_alone(
    make_storage: MakeStorage, s3_bucket: str, status: int, code: str, message: str
) -> None:
    waits: list[float] = []
    storage = make_storage(s3_bucket, sleep=waits.append)
    answer_puts_with(storage, [(status, code)])

    with pytest.raises(UploadFailed, match=message) as failed:
        storage.store("job-1", 0, PNG)

    assert waits == []
    assert_no_credential_in(exception_texts(failed.value), [FAKE])


def test_s3_stopped_mid_job_is_retried_then_reported_and_works_again_after_a_restart(
    make_storage: MakeStorage, s3_server_factory: S3ServerFactory
) -> None:
    server = s3_server_factory()
    bucket = server.create_bucket()
    waits: list[float] = []
    storage = make_storage(bucket, server=server, sleep=waits.append)
    storage.store("job-1", 0, PNG)

    server.stop()
    with pytest.raises(UploadFailed) as failed:
        storage.store("job-1", 1, PNG)

    assert len(waits) == STORAGE_ATTEMPTS - 1
    assert all(0 < wait <= 5 for wait in waits)
    assert str(failed.value) == (
        f"could not store output 1 in bucket '{bucket}' at {server.endpoint_url} after "
        f"{STORAGE_ATTEMPTS} attempts: could not reach S3 (EndpointConnectionError)"
    )

    server.start()  # same port; moto forgets its buckets
    server.create_bucket(bucket)
    url = storage.store("job-1", 1, PNG)
    assert requests.get(url, timeout=5).content == PNG.data


def test_s3_coming_back_while_an_upload_is_retried_lets_it_succeed(
    make_storage: MakeStorage, s3_server_factory: S3ServerFactory
) -> None:
    server = s3_server_factory()
    bucket = server.create_bucket()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            server.start()
            server.create_bucket(bucket)

    storage = make_storage(bucket, server=server, sleep=sleep)
    server.stop()

    urls = storage.store_all("job-1", [Artifact(tiny_png(5))])

    assert len(waits) == 2
    assert requests.get(urls[0], timeout=5).content == tiny_png(5)


def test_the_worker_stopping_ends_an_uploads_retry_wait_and_its_retries(
    make_storage: MakeStorage, s3_server_factory: S3ServerFactory
) -> None:
    server = s3_server_factory()
    bucket = server.create_bucket()
    stopping = threading.Event()
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the stop arrives during the first wait
        waits.append(seconds)
        stopping.set()

    storage = make_storage(bucket, server=server, sleep=sleep, interrupt=stopping)
    server.stop()

    with pytest.raises(UploadFailed, match="after 2 attempts"):
        storage.store("job-1", 0, PNG)
    assert len(waits) == 1, "no wait after the stop"


def test_with_the_worker_stopping_an_unreachable_s3_is_tried_once_and_never_waited_for(
    make_storage: MakeStorage,
) -> None:
    stopping = threading.Event()
    stopping.set()
    storage = make_storage("b-1", endpoint_url=closed_port_endpoint(), sleep=None,
                           interrupt=stopping)

    with pytest.raises(UploadFailed, match="after 1 attempt: "):
        storage.store("job-1", 0, PNG)


def test_check_reports_an_unreachable_endpoint_as_upload_failed(
    make_storage: MakeStorage,
) -> None:
    endpoint = closed_port_endpoint()
    with pytest.raises(UploadFailed, match=f"bucket 'b-1' at {endpoint} is unreachable"):
        make_storage("b-1", endpoint_url=endpoint).check()
