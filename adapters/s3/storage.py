"""Outputs stored in an S3-compatible bucket, returned as presigned (or plain) URLs.

Why it exists: users fetch their images from a bucket, not from the job result (results are
capped at about 10 MB by the job API). ``S3Storage`` implements the ``Storage`` port
(:class:`domain.ports.Storage`) for AWS S3 and any S3-protocol server (MinIO, R2, B2, moto).

What it promises:

- **Keys** are ``{safe_name(job_id)}/{index}.{extension}``: the job id is made safe by
  :func:`domain.job.safe_name`, so no input can put a key outside its job's prefix, and the same
  ``(job_id, index)`` always maps to the same key (storing again overwrites). ``Content-Type`` is
  the artifact's.
- **References** are presigned GET URLs valid ``url_expiry_s`` seconds (7 days at most, SigV4's
  limit), or plain ``{endpoint}/{bucket}/{key}`` URLs with ``public_urls=True`` (the bucket must
  then allow anonymous reads). A presigned URL carries the access key id in its query string
  (``X-Amz-Credential``): that is how SigV4 works, so such URLs, like the results that hold them,
  must not be logged. It never carries the secret.
- **Bucket naming**: ``"fixed"`` uses ``bucket``; ``"monthly"`` is the seed worker's scheme, one
  bucket a month named ``MM-YY`` (``11-26`` for November 2026) from ``today()`` (UTC by default;
  injectable). The month is read once per ``store``/``store_all`` call, so one job's images
  share a bucket. Each month's bucket must exist before its first upload: nothing is created.
- **Deadlines and caps**: every S3 call (an upload, ``check``) ends within ``timeout_s`` (plus a
  second per MB sent), connect included, however slowly the endpoint answers, and reads at most
  1 MB of answer (:mod:`adapters.s3.transport`: botocore signs, podworker's HTTP client sends).
- **Retries**: only the shared ``domain.waiting.STORAGE_UPLOAD`` schedule retries (botocore's
  own retries are off, so attempts do not multiply and every wait goes through ``sleep``); one
  output is tried for at most 30 s, plus the call under way.
  Connection errors, timeouts, 5xx and throttling are ``StorageUnavailable`` (transient) inside
  the policy; when it gives up, ``UploadFailed`` names the bucket, the endpoint, the attempts
  and the last reason. A missing bucket or refused credentials are ``UploadFailed`` at once.
- **Secrets**: no message, log line or ``repr`` holds the access key id or the secret, in whole
  or in part. Messages are built from S3 error *codes* and HTTP statuses, never from botocore's
  text (some S3 servers echo the access key id in their error bodies), and botocore's exceptions
  are not chained. botocore logs every request's headers at DEBUG (the ``Authorization`` header
  names the access key id), so building an ``S3Storage`` raises the ``botocore``, ``boto3`` and
  ``s3transfer`` loggers to WARNING.
- **Parallel uploads**: ``store_all`` uploads one job's artifacts on a small shared thread pool
  (``max_parallel`` threads) and returns the references in the artifacts' order.
- **Imports**: boto3 is imported when an ``S3Storage`` is built, never when this module is
  imported (it is an optional dependency: ``podworker[s3]``). Nothing touches the network until
  the first upload or ``check()``.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from adapters.retrying import retrying
from adapters.s3.client import CALL_TIMEOUT_S, CONNECT_TIMEOUT_S, make_client
from adapters.s3.errors import botocore_error, client_error
from adapters.s3.transport import S3Transport
from domain import waiting
from domain.errors import (
    ConfigurationError,
    StorageUnavailable,
    UploadFailed,
)
from domain.job import Artifact, safe_name
from domain.outputs import output_file_name, store_one_by_one

logger = logging.getLogger(__name__)

Sleep = Callable[[float], None]
Today = Callable[[], datetime.date]

BUCKET_NAMINGS = ("fixed", "monthly")

#: SigV4 presigned URLs are valid for 7 days at most.
MAX_URL_EXPIRY_S = 604_800



def _utc_today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


def monthly_bucket_name(day: datetime.date) -> str:
    """The seed worker's bucket for ``day``'s month: ``MM-YY`` (``11-26`` for November 2026)."""
    return f"{day.month:02d}-{day.year % 100:02d}"


def object_key(job_id: str, index: int, artifact: Artifact) -> str:
    """``{safe_name(job_id)}/{index}.{extension}``; raises ``UploadFailed`` for a bad extension."""
    return f"{safe_name(job_id)}/{output_file_name(index, artifact)}"


def _display_endpoint(url: str) -> str:
    """The endpoint as shown in messages: no user info, query or fragment, no trailing slash."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class S3Storage:
    """Stores outputs in an S3 bucket; see the module docstring for what it promises.

    ``access_key_id`` and ``secret_access_key`` are given together, or both left ``None`` to
    use boto3's own credential chain (an instance role, say). ``endpoint_url=None`` means AWS.
    ``timeout_s`` bounds each S3 call (``BUCKET_TIMEOUT``). ``sleep`` is the retry policy's
    wait (pass an interruptible one, such as a stop event's ``wait``; tests pass a recorder);
    ``interrupt`` set (the worker stopping) ends a retry's wait at once and gives up retrying.
    ``today`` picks the month under ``bucket_naming="monthly"``.
    Raises ``ConfigurationError`` for inconsistent arguments; touches no network.
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
        bucket: str | None = None,
        bucket_naming: str = "fixed",
        region: str = "us-east-1",
        public_urls: bool = False,
        url_expiry_s: int = MAX_URL_EXPIRY_S,
        sleep: Sleep | None = None,
        interrupt: threading.Event | None = None,
        max_parallel: int = 4,
        timeout_s: float = CALL_TIMEOUT_S,
        today: Today = _utc_today,
    ) -> None:
        if bucket_naming not in BUCKET_NAMINGS:
            raise ConfigurationError(
                f"invalid bucket naming {bucket_naming!r}: must be 'fixed' or 'monthly'"
            )
        if bucket_naming == "fixed" and not bucket:
            raise ConfigurationError(
                "invalid setting BUCKET_NAME: required with fixed bucket naming (or set "
                "BUCKET_NAMING=monthly for the seed's one-bucket-a-month names)"
            )
        if bucket_naming == "monthly" and bucket:
            raise ConfigurationError(
                f"bucket {bucket!r} is given, but monthly naming picks the bucket (MM-YY): "
                "unset the bucket name or use fixed naming"
            )
        if (access_key_id is None) != (secret_access_key is None):
            raise ConfigurationError(
                "give both the access key id and the secret access key, or neither"
            )
        if not 1 <= url_expiry_s <= MAX_URL_EXPIRY_S:
            raise ConfigurationError(
                f"invalid setting BUCKET_URL_EXPIRY: the URL expiry must be between 1 and "
                f"{MAX_URL_EXPIRY_S} seconds (SigV4's limit), got {url_expiry_s}"
            )
        if max_parallel < 1:
            raise ConfigurationError(f"max_parallel must be at least 1, got {max_parallel}")
        if timeout_s <= 0:
            raise ConfigurationError(f"invalid setting BUCKET_TIMEOUT: must be positive, got "
                                     f"{timeout_s * 1000:g} ms")

        self._bucket = bucket
        self._naming = bucket_naming
        self._public_urls = public_urls
        self._url_expiry_s = url_expiry_s
        self._sleep = sleep
        self._interrupt = interrupt
        self._today = today
        self._client = make_client(endpoint_url, access_key_id, secret_access_key, region)
        self._transport = S3Transport(timeout_s=timeout_s, connect_timeout_s=CONNECT_TIMEOUT_S,
                                      max_connections=max(10, max_parallel))
        self._transport.attach(self._client)
        self.endpoint = _display_endpoint(str(self._client.meta.endpoint_url))
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="s3-upload")

    # --- the Storage port ---------------------------------------------------------------

    def store(self, job_id: str, index: int, artifact: Artifact) -> str:
        """Upload one output and return its URL. Raises ``UploadFailed`` (after retries)."""
        return self._store(self.current_bucket(), job_id, index, artifact)

    def store_all(
        self, job_id: str, artifacts: Sequence[Artifact], first_index: int = 0
    ) -> list[str]:
        """Upload one job's outputs in parallel (the ``i``-th at index ``first_index + i``);
        URLs in order.

        Waits for every upload to end, then raises the first failure (in index order) as
        ``UploadFailed``, so no upload is left running behind an error.
        """
        bucket = self.current_bucket()
        if len(artifacts) <= 1:
            return store_one_by_one(partial(self._store, bucket), job_id, artifacts, first_index)
        futures: list[Future[str]] = [
            self._pool.submit(self._store, bucket, job_id, first_index + i, artifact)
            for i, artifact in enumerate(artifacts)
        ]
        wait_all(futures)
        return [future.result() for future in futures]

    def check(self) -> None:
        """Check once that the current bucket exists and the credentials may use it.

        Returns None, or raises ``UploadFailed`` with the message a job would get.
        """
        bucket = self.current_bucket()
        try:
            self._call(bucket, lambda: self._client.head_bucket(Bucket=bucket))
        except StorageUnavailable as exc:
            raise UploadFailed(
                f"bucket '{bucket}' at {self.endpoint} is unreachable: {exc}"
            ) from None

    def current_bucket(self) -> str:
        """The bucket uploads go to now (under monthly naming, this month's)."""
        if self._naming == "monthly":
            return monthly_bucket_name(self._today())
        assert self._bucket is not None  # checked in __init__
        return self._bucket

    def close(self) -> None:
        """Wait for running uploads, then release the thread pool and connections."""
        self._pool.shutdown(wait=True)
        self._client.close()
        self._transport.close()

    def __repr__(self) -> str:
        bucket = self._bucket if self._naming == "fixed" else "MM-YY (monthly)"
        return (
            f"S3Storage(endpoint={self.endpoint!r}, bucket={bucket!r}, "
            f"public_urls={self._public_urls})"
        )

    # --- internals ----------------------------------------------------------------------

    def _store(self, bucket: str, job_id: str, index: int, artifact: Artifact) -> str:
        key = object_key(job_id, index, artifact)
        started = time.monotonic()
        attempts = 0
        try:
            for attempt in retrying(waiting.STORAGE_UPLOAD, interrupt=self._interrupt,
                                      sleep=self._sleep):
                with attempt:
                    attempts += 1
                    try:
                        self._put(bucket, key, artifact)
                    except StorageUnavailable as exc:
                        logger.warning(
                            "s3 upload of %s to bucket '%s' failed (attempt %d): %s",
                            key,
                            bucket,
                            attempts,
                            exc,
                            extra={"event": "storage_retry", "job_id": job_id},
                        )
                        raise
        except StorageUnavailable as exc:
            raise UploadFailed(
                f"could not store output {index} in bucket '{bucket}' at {self.endpoint} "
                f"after {attempts} attempt{'s' if attempts != 1 else ''}: {exc}"
            ) from None
        logger.debug(
            "stored %s in bucket '%s' (%d bytes, %.3f s, %d attempts)",
            key,
            bucket,
            len(artifact.data),
            time.monotonic() - started,
            attempts,
            extra={"event": "output_stored", "job_id": job_id},
        )
        return self._reference(bucket, key)

    def _put(self, bucket: str, key: str, artifact: Artifact) -> None:
        self._call(
            bucket,
            lambda: self._client.put_object(
                Bucket=bucket, Key=key, Body=artifact.data, ContentType=artifact.content_type
            ),
        )

    def _reference(self, bucket: str, key: str) -> str:
        url = self._call(
            bucket,
            lambda: self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": bucket, "Key": key},
                ExpiresIn=self._url_expiry_s,
            ),
        )
        if self._public_urls:
            # The presigned URL minus its signature is the object's plain URL in whatever
            # addressing style the client uses ({endpoint}/{bucket}/{key} for custom endpoints).
            return str(url).split("?", 1)[0]
        return str(url)

    def _call(self, bucket: str, call: Callable[[], Any]) -> Any:
        """Run one botocore call, translating its errors (never chaining botocore's text)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as exc:
            error = client_error(exc.response, bucket, self.endpoint)
        except BotoCoreError as exc:
            error = botocore_error(exc, self.endpoint)
        raise error from None
