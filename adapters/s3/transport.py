"""S3 requests sent by podworker's own HTTP client: botocore signs, :mod:`adapters.http.client`
sends, so every S3 call has an overall deadline and a cap on what its answer may cost.

Why: botocore's ``read_timeout`` bounds each socket read, not the call, so an S3 endpoint that
trickles a byte every few seconds held an upload (and the whole store stage) for ever; and it
reads a non-streaming answer whole, so an endpoint that answers with an endless body grew the
process by gigabytes in seconds. Neither can be fixed from outside botocore's transport, and
running calls on a pool and abandoning them past a deadline would leave each abandoned call
holding a thread and a connection for as long as the endpoint trickles. Instead, botocore's
documented ``before-send`` event hands every prepared (signed) request to :class:`S3Transport`,
which sends it with the shared ``HttpClient`` (the job API's client policy: an overall deadline
enforced by a watchdog that shuts the socket, an answer read as a stream up to a cap, TLS always
verified) and gives botocore back the answer to parse. What botocore still does: signing, the
request's shape, parsing answers and errors.

Limits of one call: ``timeout_s`` plus a second per MB sent (at least 1 MB/s for large uploads),
connect included; a 2xx answer of at most ``MAX_ANSWER_BYTES`` (S3's answers to the calls made
here are headers and a few hundred bytes of XML); of an error answer only its first 64 KiB is
read. A call that breaks either limit, or cannot connect, raises ``StorageUnavailable``
(transient: the upload schedule retries it); the message names no URL, key or credential.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from adapters.http.client import AnswerTooLarge, DeadlineExceeded, HttpClient, HttpFailure
from domain.errors import StorageUnavailable

MAX_ANSWER_BYTES = 1024 * 1024
"""Most bytes of a 2xx answer read from S3 (the calls made here answer with headers and a few
hundred bytes)."""
MIN_UPLOAD_BYTES_PER_S = 1_000_000
"""Each MB of an upload adds a second to its call's deadline."""
_DROPPED_HEADERS = frozenset({"expect"})  # 100-continue: the body is sent at once


class _Body(io.BytesIO):
    """An answer's body as botocore reads it (``stream()``, ``read()``)."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        chunk = self.read()
        if chunk:
            yield chunk


class S3Transport:
    """Sends botocore's prepared requests (``before-send``) with an overall deadline and a cap."""

    def __init__(self, *, timeout_s: float, connect_timeout_s: float, max_connections: int,
                 client: HttpClient | None = None) -> None:
        self.timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._client = client or HttpClient(max_connections=max_connections)

    def attach(self, botocore_client: Any) -> None:
        """Send every request of ``botocore_client`` through this transport."""
        botocore_client.meta.events.register("before-send.s3", self.send)

    def send(self, request: Any, **_: Any) -> Any:
        """The ``before-send`` handler: the answer to ``request`` (a botocore
        ``AWSPreparedRequest``), as a botocore ``AWSResponse``."""
        from botocore.awsrequest import AWSResponse

        body = _bytes_of(request.body)
        headers = {str(name): _text(value) for name, value in request.headers.items()
                   if str(name).lower() not in _DROPPED_HEADERS}
        deadline = self.timeout_s + len(body or b"") / MIN_UPLOAD_BYTES_PER_S
        try:
            answer = self._client.request(
                request.method, request.url, body=body, headers=headers, deadline_s=deadline,
                max_answer_bytes=MAX_ANSWER_BYTES, connect_timeout_s=self._connect_timeout_s,
            )
        except DeadlineExceeded:
            raise StorageUnavailable(
                f"S3 did not answer within {deadline:.3g} s (BUCKET_TIMEOUT)") from None
        except AnswerTooLarge:
            raise StorageUnavailable(
                f"S3's answer was over {MAX_ANSWER_BYTES} bytes (abandoned unread)") from None
        except HttpFailure as exc:
            raise StorageUnavailable(f"could not reach S3 ({exc})") from None
        return AWSResponse(request.url, answer.status, dict(answer.headers),
                           _Body(answer.content))

    def close(self) -> None:
        self._client.close()


def _bytes_of(body: Any) -> bytes | None:
    """A prepared request's body as bytes (botocore may hand over a file-like object)."""
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    read = getattr(body, "read", None)
    if callable(read):
        seek = getattr(body, "seek", None)
        if callable(seek):
            seek(0)
        data = read()
        return data.encode() if isinstance(data, str) else bytes(data)
    raise TypeError(f"unexpected request body type {type(body).__name__}")


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)
