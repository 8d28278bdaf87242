"""Shared set-up for the S3 adapter's integration tests (``tests/integration/test_s3_*.py``):
S3Storage adapters on the moto server with fake credentials, a server that checks credentials,
scripted AWS error answers, and the check that no credential reaches a text.
"""

from __future__ import annotations

import socket
import struct
import traceback
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from adapters.s3.storage import S3Storage
from domain.job import Artifact
from tests.support.s3_server import (
    FAKE_ACCESS_KEY_ID,
    FAKE_SECRET_ACCESS_KEY,
    AuthUsers,
    Credentials,
    S3Server,
    start_s3_server,
)

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

