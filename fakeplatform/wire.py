"""HTTP/1.1 on a socket, fast: a small request parser and answers written in one piece.

Every answer is one write of head and body, with ``Content-Length``, over keep-alive and
``TCP_NODELAY``, so a client can make thousands of round trips a second. The standard
library's parser builds an ``email.message.Message`` per request, most of the CPU time per
request; this one is a few string operations and falls back to it for anything unusual.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import socket
import socketserver
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, cast

MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, body bytes, content type and extra headers."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, data: Any, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(data, separators=(",", ":")).encode(), headers or {})


EMPTY_OK = Reply(200)
NO_CONTENT = Reply(204)


class Site(Protocol):
    """What the server serves: answers, and a say in each connection's life."""

    def handle(self, method: str, target: str, headers: Mapping[str, str],
               body: bytes) -> Reply: ...
    def is_stopping(self) -> bool: ...
    def connection_opened(self, conn: socket.socket) -> None: ...
    def connection_closed(self, conn: socket.socket) -> None: ...
    def request_began(self) -> None: ...
    def request_ended(self) -> None: ...


class WireServer(ThreadingHTTPServer):
    """A thread per connection; quiet about clients that drop their connection."""

    daemon_threads = True
    request_queue_size = 128
    site: Site

    def __init__(self, address: tuple[str, int], site: Site) -> None:
        super().__init__(address, _Handler)
        self.site = site

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that drops its keep-alive connection (a worker killed by a test, say) is
        # normal here: stay quiet. Anything else is a bug in the fake: show it.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also does a reverse DNS lookup (getfqdn), which can take
        # seconds in a sandbox; the fake needs none of it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 300  # an idle keep-alive connection is closed after this many seconds
    raw_requestline: bytes  # set by handle_one_request before parse_request

    @property
    def site(self) -> Site:
        return cast(WireServer, self.server).site

    def setup(self) -> None:
        super().setup()
        self.site.connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.site.connection_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a request is not worth a line."""

    def parse_request(self) -> bool:
        """Read the request line and headers into ``lower_headers`` (a plain dict).

        Anything but a plain ``METHOD target HTTP/1.x`` line goes to the standard parser (and
        its errors).
        """
        self.lower_headers: dict[str, str] = {}
        line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = line.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            if not super().parse_request():
                return False
            self.lower_headers = {k.lower(): v for k, v in self.headers.items()}
            return True
        self.requestline = line
        self.command, self.path, self.request_version = words
        headers = self.lower_headers
        while True:
            raw = self.rfile.readline(65537)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, sep, value = str(raw, "iso-8859-1").partition(":")
            if len(raw) > 65536 or not sep or len(headers) >= 100:
                self.send_error(431 if sep else 400)
                return False
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive"
        )
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        site = self.site
        if site.is_stopping():
            # a stopped server acts on nothing: drop the connection unanswered, as a dead one
            # would (a request that slipped in while stop() ran must not be recorded)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        site.request_began()
        try:
            body = self._read_body()
            if body is None:
                reply = Reply.json(413, {"error": "body too large"})
                self.close_connection = True
            else:
                try:
                    reply = site.handle(method, self.path, self.lower_headers, body)
                except Exception as exc:  # the fake must answer, whatever went wrong
                    reply = Reply.json(500, {"error": f"fake job API failed: {exc!r}"})
            self._send(reply)
        finally:
            site.request_ended()

    def _read_body(self) -> bytes | None:
        if "chunked" in self.lower_headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.lower_headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, reply: Reply) -> None:
        reason = self.responses.get(reply.status, ("",))[0]
        lines = [f"HTTP/1.1 {reply.status} {reason}",
                 f"Date: {email.utils.formatdate(usegmt=True)}"]
        if reply.status not in (204, 304):
            lines.append(f"Content-Length: {len(reply.body)}")
            if reply.body:
                lines.append(f"Content-Type: {reply.content_type}")
        lines.extend(f"{k}: {v}" for k, v in reply.headers.items())
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        with contextlib.suppress(OSError):
            self.wfile.write(head + reply.body)  # one write: no Nagle/delayed-ACK stall
