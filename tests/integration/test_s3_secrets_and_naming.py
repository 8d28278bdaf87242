"""The S3 adapter's monthly bucket naming, and no credential in its logs or errors, against a
real S3-protocol server (moto's server mode) on loopback.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from adapters.s3.storage import monthly_bucket_name
from domain.errors import UploadFailed
from tests.support.s3_server import FAKE_SECRET_ACCESS_KEY, AuthUsers, Credentials, S3Server
from tests.support.s3_storage_kit import (
    FAKE,
    PNG,
    WRONG_KEY_ID,
    MakeStorage,
    answer_puts_with,
    assert_no_credential_in,
    closed_port_endpoint,
    exception_texts,
)

# --- monthly buckets -------------------------------------------------------------------------


def test_monthly_bucket_names_are_the_seeds_mm_yy() -> None:
    assert monthly_bucket_name(datetime.date(2026, 11, 28)) == "11-26"
    assert monthly_bucket_name(datetime.date(2005, 1, 1)) == "01-05"


def test_monthly_naming_stores_in_this_months_bucket_and_follows_the_date(
    make_storage: MakeStorage, s3_server: S3Server
) -> None:
    # Months far from today: a test sharing this S3 server may create this month's bucket.
    today = [datetime.date(2031, 11, 30)]
    s3_server.create_bucket("11-31")
    storage = make_storage(bucket_naming="monthly", today=lambda: today[0])

    url = storage.store("job-1", 0, PNG)

    assert urlsplit(url).path == "/11-31/job-1/0.png"
    assert s3_server.keys("11-31") == ["job-1/0.png"]
    today[0] = datetime.date(2031, 12, 1)  # December's bucket was never created
    with pytest.raises(UploadFailed, match="bucket '12-31' does not exist"):
        storage.store("job-2", 0, PNG)


# --- secrets ---------------------------------------------------------------------------------


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
