"""A hostile S3 endpoint on loopback: it reads each upload, then answers as ``mode`` says.

- ``"ok"``: ``200`` with an ``ETag``, as S3 does;
- ``"trickle"``: the status line one byte every ``interval_s``, never finishing (a per-read
  timeout never trips; only an overall deadline ends the call);
- ``"endless"``: ``200`` with a chunked body that never ends, as fast as the socket takes it
  (a client that reads answers whole grows until it dies).

``HEAD`` (a bucket check) is answered ``200`` in every mode. Every request is counted in
``requests`` (method and path); ``stop()`` ends every answer it is sending.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest


class HostileS3:
    """See the module docstring."""

    def __init__(self, mode: str = "ok", interval_s: float = 0.5) -> None:
        self.mode = mode
        self.interval_s = interval_s
        self.requests: list[tuple[str, str]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.s3 = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def puts(self) -> int:
        with self._lock:
            return sum(1 for method, _ in self.requests if method == "PUT")

    def start(self) -> HostileS3:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def s3(self) -> HostileS3:
        server: HostileS3 = cast(Any, self.server).s3
        return server

    def do_HEAD(self) -> None:
        self.s3.record("HEAD", self.path)
        self._plain()

    def do_PUT(self) -> None:
        self.s3.record("PUT", self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        mode = self.s3.mode
        try:
            if mode == "trickle":
                self._trickle()
            elif mode == "endless":
                self._endless()
            else:
                self._plain()
        except OSError:  # the client gave up: that is the point
            self.close_connection = True

    def _plain(self) -> None:
        self.send_response(200)
        self.send_header("ETag", '"d41d8cd98f00b204e9800998ecf8427e"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _trickle(self) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" * 1000:
            if self.s3.stopping.wait(self.s3.interval_s):
                break
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
        self.close_connection = True

    def _endless(self) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                         b"Content-Type: application/xml\r\n\r\n")
        chunk = b"<x>" + b"A" * 65_530 + b"</x>"
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        while not self.s3.stopping.is_set():
            self.wfile.write(frame)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def hostile_s3() -> Iterator[HostileS3]:
    server = HostileS3().start()
    try:
        yield server
    finally:
        server.stop()
