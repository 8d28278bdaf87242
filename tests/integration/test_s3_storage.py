"""The S3 adapter against a real S3-protocol server (moto's server mode) over HTTP on loopback:
its configuration, and storing.

What a user relies on: the URL in a result fetches the very bytes the model produced; a job's
keys never leave its prefix. Failures are in ``test_s3_failures.py``, monthly bucket naming and
keeping credentials out of logs and errors in ``test_s3_secrets_and_naming.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from adapters.s3.storage import S3Storage
from app.bootstrap import build_storage
from app.settings import load_settings
from domain.errors import ConfigurationError, UploadFailed
from domain.job import Artifact, safe_name
from domain.ports import Storage
from tests.support.s3_server import (
    FAKE_ACCESS_KEY_ID,
    FAKE_SECRET_ACCESS_KEY,
    Credentials,
    S3Server,
)
from tests.support.s3_storage_kit import (
    FAKE,
    PNG,
    MakeStorage,
    assert_no_credential_in,
    tiny_png,
)
from tests.unit.test_thread_map import drawn_threads

REPO_ROOT = Path(__file__).resolve().parents[2]


# --- imports and configuration ---------------------------------------------------------------


def test_importing_the_adapter_module_does_not_import_boto3() -> None:
    code = (
        "import sys, adapters.s3.storage; "
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
        ({"bucket": None}, "BUCKET_NAME: required with fixed bucket naming"),
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


def test_a_bucket_setting_the_storage_refuses_stops_the_start_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="invalid setting BUCKET_URL_EXPIRY"):
        build_storage(load_settings(env_file=None, BUCKET_ENDPOINT_URL="http://127.0.0.1:9",
                                    BUCKET_NAME="b", BUCKET_URL_EXPIRY=604_801))
    with pytest.raises(ConfigurationError, match="invalid setting BUCKET_NAME: required"):
        build_storage(load_settings(env_file=None, BUCKET_ENDPOINT_URL="http://127.0.0.1:9"))


def test_the_upload_threads_are_drawn_on_the_workers_thread_map(
    make_storage: MakeStorage, s3_bucket: str
) -> None:
    before = {t.ident for t in threading.enumerate()}
    storage = make_storage(s3_bucket)
    storage.store_all("job-1", [Artifact(tiny_png(1)), Artifact(tiny_png(2))])

    started = {re.sub(r"_\d+$", "", t.name) for t in threading.enumerate()
               if t.ident not in before}
    assert "s3-upload" in started
    assert "s3-upload" in drawn_threads()
