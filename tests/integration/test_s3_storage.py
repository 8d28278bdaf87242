"""The S3 adapter against a real S3-protocol server (moto's server mode) over HTTP on loopback.

What a user relies on: the URL in a result fetches the very bytes the model produced; a job's
keys never leave its prefix; a missing bucket or wrong credentials give a job error that says
what to fix; S3 going away mid-job is retried and then reported; no credential ever reaches a
log line or an error message.
"""

from __future__ import annotations

import datetime
import logging
import struct
import subprocess
import sys
import threading
import traceback
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from botocore.awsrequest import AWSResponse

from adapters.s3_storage import S3Storage, monthly_bucket_name
from domain.errors import ConfigurationError, UploadFailed
from domain.job import Artifact, safe_name
from domain.ports import Storage
from tests.support.s3_server import (
    FAKE_ACCESS_KEY_ID,
    FAKE_SECRET_ACCESS_KEY,
    AuthUsers,
    Credentials,
    S3Server,
    S3ServerFactory,
    start_s3_server,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
STORAGE_ATTEMPTS = 5  # adapters.retrying.storage_upload: up to 5 attempts
FAKE = Credentials(FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY)
WRONG_KEY_ID = "AKIAWRONGKEYQ7ZXBVNM"  # a well-formed access key id that the server never issued


def tiny_png(shade: int = 0) -> bytes:
    """A valid 1x1 grey PNG; different shades give different bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(bytes([0, shade % 256]))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNG = Artifact(tiny_png())

MakeStorage = Callable[..., S3Storage]


@pytest.fixture
def make_storage(s3_server: S3Server) -> Iterator[MakeStorage]:
    """Build S3Storage adapters (the shared server and fake credentials unless told otherwise);
    every one is closed when the test ends. Retries never sleep unless ``sleep=`` says so."""
    built: list[S3Storage] = []

    def make(
        bucket: str | None = None,
        *,
        server: S3Server | None = None,
        endpoint_url: str | None = None,
        credentials: Credentials = FAKE,
        **options: Any,
    ) -> S3Storage:
        options.setdefault("sleep", lambda seconds: None)
        storage = S3Storage(
            endpoint_url=endpoint_url or (server or s3_server).endpoint_url,
            access_key_id=credentials.access_key_id,
            secret_access_key=credentials.secret_access_key,
            bucket=bucket,
            **options,
        )
        built.append(storage)
        return storage

    yield make
    for storage in built:
        storage.close()


def closed_port_endpoint() -> str:
    """A loopback endpoint with nothing listening: every connection is refused."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class _RawBody:
    """The little of urllib3's response that botocore's AWSResponse reads."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def answer_puts_with(storage: S3Storage, answers: list[tuple[int, str]]) -> list[str]:
    """Make the next PutObject requests get these (status, S3 error code) answers, as AWS
    sends them (error bodies echo the access key id), then reach the server again. Returns a
    list that records each request's method. Works on botocore's real parsing path."""
    sent: list[str] = []
    pending = list(answers)

    def before_send(request: Any, **_: Any) -> AWSResponse | None:
        sent.append(request.method)
        if not pending:
            return None
        status, code = pending.pop(0)
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{code} for {FAKE_ACCESS_KEY_ID}</Message>"
            f"<AWSAccessKeyId>{FAKE_ACCESS_KEY_ID}</AWSAccessKeyId>"
            f"<StringToSign>AWS4-HMAC-SHA256 {FAKE_ACCESS_KEY_ID}</StringToSign>"
            "<RequestId>4442587FB7D0A2F9</RequestId></Error>"
        ).encode()
        headers = {"Content-Type": "application/xml", "Content-Length": str(len(body))}
        return AWSResponse(request.url, status, headers, _RawBody(body))

    storage._client.meta.events.register("before-send.s3.PutObject", before_send)
    return sent


# --- imports and configuration ---------------------------------------------------------------


def test_importing_the_adapter_module_does_not_import_boto3() -> None:
    code = (
        "import sys, adapters.s3_storage; "
        "print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"bucket": None}, "bucket name is required"),
        ({"bucket": "b-1", "bucket_naming": "monthly"}, "monthly naming picks the bucket"),
        ({"bucket": "b-1", "bucket_naming": "weekly"}, "'fixed' or 'monthly'"),
        ({"bucket": "b-1", "secret_access_key": None}, "both the access key id and the secret"),
        ({"bucket": "b-1", "url_expiry_s": 604_801}, "between 1 and 604800"),
        ({"bucket": "b-1", "max_parallel": 0}, "at least 1"),
        ({"bucket": "b-1", "endpoint_url": "not a url"}, "invalid S3 endpoint URL"),
    ],
)
def test_inconsistent_settings_are_refused_when_the_adapter_is_built(
    options: dict[str, Any], complaint: str
) -> None:
    arguments: dict[str, Any] = {
        "endpoint_url": "http://127.0.0.1:9",
        "access_key_id": FAKE_ACCESS_KEY_ID,
        "secret_access_key": FAKE_SECRET_ACCESS_KEY,
        **options,
    }
    with pytest.raises(ConfigurationError, match=complaint) as refused:
        S3Storage(**arguments)
    assert FAKE_SECRET_ACCESS_KEY[:6] not in str(refused.value)


def test_repr_shows_endpoint_and_bucket_but_no_credential(make_storage: MakeStorage) -> None:
    storage = make_storage("photos")
    text = repr(storage)
    assert "photos" in text and storage.endpoint in text
    assert_no_credential_in([text], [FAKE])


# --- uploads ---------------------------------------------------------------------------------


def test_a_stored_png_comes_back_byte_for_byte_from_its_presigned_url(
    make_storage: MakeStorage, s3_server: S3Server, s3_bucket: str
) -> None:
    storage: Storage = make_storage(s3_bucket, url_expiry_s=3600)

    [url] = storage.store_all("job-42", [PNG])

    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["3600"] and "X-Amz-Signature" in query
    fetched = requests.get(url, timeout=5)
    assert fetched.status_code == 200
    assert fetched.content == PNG.data
    assert fetched.headers["Content-Type"] == "image/png"
    assert s3_server.keys(s3_bucket) == ["job-42/0.png"]


def test_a_presigned_url_never_carries_the_secret(
    make_storage: MakeStorage, s3_bucket: str
) -> None:
    url = make_storage(s3_bucket).store("job-1", 0, PNG)
    assert_no_credential_in([url], [Credentials("", FAKE_SECRET_ACCESS_KEY)])


def test_public_urls_are_plain_endpoint_bucket_key_urls_that_serve_the_object(
    make_storage: MakeStorage, s3_server: S3Server, s3_bucket: str
) -> None:
    s3_server.make_public(s3_bucket)
    storage = make_storage(s3_bucket, public_urls=True)

    url = storage.store("job-7", 2, Artifact(b"GIF89a...", "image/gif", "gif"))

    assert url == f"{s3_server.endpoint_url}/{s3_bucket}/job-7/2.gif"
    fetched = requests.get(url, timeout=5)
    assert fetched.content == b"GIF89a..."
    assert fetched.headers["Content-Type"] == "image/gif"


HOSTILE_JOB_IDS = [
    "../../etc/x",
    "..",
    ".hidden",
    "a/b/c",
    "/absolute",
    "back\\slash",
    "%2e%2e%2fencoded",
    "ジョブ/🙂",
    "tab\there",
]


def test_hostile_job_ids_stay_inside_their_own_single_segment_prefix(
    make_storage: MakeStorage, s3_server: S3Server, s3_bucket: str
) -> None:
    storage = make_storage(s3_bucket)

    urls = [storage.store(job_id, 0, PNG) for job_id in HOSTILE_JOB_IDS]

    keys = s3_server.keys(s3_bucket)
    assert keys == sorted(f"{safe_name(job_id)}/0.png" for job_id in HOSTILE_JOB_IDS)
    for key in keys:
        prefix, name = key.split("/")  # exactly one slash
        assert name == "0.png"
        assert prefix not in {"", ".", ".."} and not prefix.startswith(".")
        assert prefix.isascii() and prefix.isprintable()
    assert all(requests.get(url, timeout=5).content == PNG.data for url in urls)


def test_a_bad_file_extension_is_refused_instead_of_shaping_the_key(
    make_storage: MakeStorage, s3_server: S3Server, s3_bucket: str
) -> None:
    storage = make_storage(s3_bucket)
    with pytest.raises(UploadFailed, match="invalid file extension"):
        storage.store("job-1", 0, Artifact(b"x", "image/png", "png/../../x"))
    assert s3_server.keys(s3_bucket) == []


def test_storing_the_same_output_again_overwrites_it(
    make_storage: MakeStorage, s3_server: S3Server, s3_bucket: str
) -> None:
    storage = make_storage(s3_bucket)
    storage.store("job-1", 0, Artifact(tiny_png(1)))

    url = storage.store("job-1", 0, Artifact(tiny_png(2)))

    assert s3_server.keys(s3_bucket) == ["job-1/0.png"]
    assert requests.get(url, timeout=5).content == tiny_png(2)


def test_store_all_uploads_a_jobs_images_at_the_same_time_and_keeps_their_order(
    make_storage: MakeStorage, s3_server: S3Server, s3_bucket: str
) -> None:
    storage = make_storage(s3_bucket, max_parallel=4)
    images = [Artifact(tiny_png(shade)) for shade in (10, 20, 30, 40)]
    # Every upload waits here until all four are in flight: sequential uploads would time out.
    all_in_flight = threading.Barrier(len(images), timeout=5)
    threads: set[str] = set()

    def hold(**_: Any) -> None:
        threads.add(threading.current_thread().name)
        all_in_flight.wait()

    storage._client.meta.events.register("before-send.s3.PutObject", hold)

    urls = storage.store_all("job-9", images)

    assert len(threads) == len(images)
    assert [urlsplit(url).path for url in urls] == [
        f"/{s3_bucket}/job-9/{index}.png" for index in range(len(images))
    ]
    assert [requests.get(url, timeout=5).content for url in urls] == [i.data for i in images]


def test_store_all_waits_for_every_upload_then_reports_the_first_failure(
    make_storage: MakeStorage, s3_server: S3Server, s3_bucket: str
) -> None:
    storage = make_storage(s3_bucket)
    images = [PNG, Artifact(b"x", "image/png", "p n g"), PNG, Artifact(b"y", "a/b", "..")]

    with pytest.raises(UploadFailed, match="output 1 has an invalid file extension"):
        storage.store_all("job-3", images)

    assert s3_server.keys(s3_bucket) == ["job-3/0.png", "job-3/2.png"]


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


@pytest.fixture(scope="module")
def auth_server() -> Iterator[tuple[S3Server, AuthUsers, str]]:
    """A private server that checks signatures and permissions, with a bucket in it."""
    server = start_s3_server()
    try:
        bucket = server.create_bucket()
        users = server.enable_auth()
        yield server, users, bucket
    finally:
        server.close()


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


def test_check_reports_an_unreachable_endpoint_as_upload_failed(
    make_storage: MakeStorage,
) -> None:
    endpoint = closed_port_endpoint()
    with pytest.raises(UploadFailed, match=f"bucket 'b-1' at {endpoint} is unreachable"):
        make_storage("b-1", endpoint_url=endpoint).check()


# --- monthly buckets -------------------------------------------------------------------------


def test_monthly_bucket_names_are_the_seeds_mm_yy() -> None:
    assert monthly_bucket_name(datetime.date(2026, 11, 28)) == "11-26"
    assert monthly_bucket_name(datetime.date(2005, 1, 1)) == "01-05"


def test_monthly_naming_stores_in_this_months_bucket_and_follows_the_date(
    make_storage: MakeStorage, s3_server: S3Server
) -> None:
    today = [datetime.date(2026, 11, 30)]
    s3_server.create_bucket("11-26")
    storage = make_storage(bucket_naming="monthly", today=lambda: today[0])

    url = storage.store("job-1", 0, PNG)

    assert urlsplit(url).path == "/11-26/job-1/0.png"
    assert s3_server.keys("11-26") == ["job-1/0.png"]
    today[0] = datetime.date(2026, 12, 1)  # December's bucket was never created
    with pytest.raises(UploadFailed, match="bucket '12-26' does not exist"):
        storage.store("job-2", 0, PNG)


# --- secrets ---------------------------------------------------------------------------------


def exception_texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


def assert_no_credential_in(texts: list[str], credentials: list[Credentials]) -> None:
    """No 6-character piece of any access key id or secret appears in any text."""
    for credential in credentials:
        for secret in (credential.access_key_id, credential.secret_access_key):
            pieces = {secret[i : i + 6] for i in range(len(secret) - 5)}
            for text in texts:
                found = sorted(piece for piece in pieces if piece in text)
                assert not found, f"credential piece(s) {found} in: {text[:300]!r}"


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_no_credential_reaches_a_log_record_or_an_error_in_any_scenario(
    make_storage: MakeStorage,
    s3_server: S3Server,
    s3_bucket: str,
    auth_server: tuple[S3Server, AuthUsers, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # botocore's and urllib3's own loggers, captured even if they stopped propagating.
    direct = _Collector()
    for name in ("botocore", "boto3", "urllib3"):
        logging.getLogger(name).addHandler(direct)
    server, users, auth_bucket = auth_server
    texts: list[str] = []

    def attempt(call: Callable[[], object]) -> None:
        try:
            call()
        except Exception as exc:
            texts.extend(exception_texts(exc))

    try:
        good = make_storage(s3_bucket, sleep=lambda seconds: None)
        texts.append(repr(good))
        good.store("job-1", 0, PNG)
        good.store_all("job-2", [PNG, PNG])
        good.check()
        attempt(lambda: make_storage("missing-bucket-x").store("job-3", 0, PNG))
        attempt(lambda: make_storage("missing-bucket-x").check())
        unreachable = make_storage("b-1", endpoint_url=closed_port_endpoint())
        attempt(lambda: unreachable.store("job-4", 0, PNG))
        attempt(lambda: unreachable.check())
        echoing = make_storage(s3_bucket)
        answer_puts_with(echoing, [(503, "SlowDown"), (403, "InvalidAccessKeyId")])
        attempt(lambda: echoing.store("job-5", 0, PNG))
        for credentials in (
            Credentials(WRONG_KEY_ID, users.allowed.secret_access_key),
            Credentials(users.allowed.access_key_id, "wrong" + FAKE_SECRET_ACCESS_KEY),
            users.no_policy,
        ):
            denied = make_storage(auth_bucket, server=server, credentials=credentials)
            texts.append(repr(denied))
            attempt(lambda: denied.store("job-6", 0, PNG))  # noqa: B023 (called at once)
            attempt(lambda: denied.check())  # noqa: B023
    finally:
        for name in ("botocore", "boto3", "urllib3"):
            logging.getLogger(name).removeHandler(direct)

    standard = set(vars(logging.makeLogRecord({})))
    for record in caplog.records + direct.records:
        texts.append(record.getMessage())
        texts.append(logging.Formatter().format(record))  # with any traceback
        texts.append(repr({k: v for k, v in vars(record).items() if k not in standard}))
    # The scenarios did run: failures were reported and retries logged.
    assert sum("access denied to bucket" in text for text in texts) >= 6
    assert any("does not exist at" in text for text in texts)
    assert any("after 5 attempts" in text for text in texts)
    assert any(record.levelno == logging.WARNING for record in caplog.records)
    assert_no_credential_in(
        texts, [FAKE, users.allowed, users.no_policy, Credentials(WRONG_KEY_ID, "")]
    )


def test_building_the_adapter_keeps_botocores_credential_logging_off(
    make_storage: MakeStorage, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    storage = make_storage(s3_bucket)

    storage.store("job-1", 0, PNG)

    assert logging.getLogger("botocore.endpoint").getEffectiveLevel() >= logging.WARNING
    assert [r for r in caplog.records if r.name.startswith(("botocore", "boto3"))] == []
