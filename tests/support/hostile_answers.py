"""What ``tests.support.hostile_server``'s server answers, and the HTTP handler that sends it.

The behaviours a test scripts per endpoint (``Answer``, ``EchoKey``, ``Trickle``, ``Endless``;
see ``hostile_server``'s docstring), each request as it arrived (``Seen``), and
``HostileHandler``, which records every request with its server, asks it for the behaviour to
play (or its normal answer) and writes that onto the socket.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from tests.support.hostile_server import HostileServer


@dataclass(frozen=True)
class Answer:
    """Answer ``status`` with ``body`` (a dict is sent as JSON); the request is not acted on."""

    status: int
    body: Any = b""


@dataclass(frozen=True)
class EchoKey:
    """Answer ``status`` with ``{"error": template}`` where ``{masked}`` becomes the key the
    request carried in ``Authorization`` (``Bearer `` dropped), masked as servers do: its first
    and last four characters, and a six-character piece of its middle as a "key id"."""

    status: int
    template: str = "invalid Authorization {masked}"
    graphql: bool = False  # answer 200 with the text as a GraphQL error instead


def mask(key: str) -> str:
    """``abcd...wxyz (key id ghijkl)``: what a server that "never shows your key" shows."""
    return f"{key[:4]}...{key[-4:]} (key id {key[7:13]})"


@dataclass(frozen=True)
class Trickle:
    """Send the answer one byte every ``interval_s`` seconds, from its status line on, and never
    finish: after ``HTTP/1.1 200 OK`` a header line that grows a byte at a time."""

    interval_s: float = 1.0


@dataclass(frozen=True)
class Endless:
    """``200`` with a chunked JSON body that never ends (``[`` then job objects forever)."""

    chunk_bytes: int = 256 * 1024


Behaviour = Answer | EchoKey | Trickle | Endless


@dataclass(frozen=True)
class Seen:
    """One request as it arrived."""

    endpoint: str  # take, done, ping, stop, graphql, or "" for anything else
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived

    def json(self) -> Any:
        return json.loads(self.body)


def _endpoint_of(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["graphql"]:
        return "graphql"
    if len(parts) >= 3 and parts[0] == "v2":
        return {"job-take": "take", "job-take-batch": "take", "job-done": "done",
                "ping": "ping", "job-stop": "stop"}.get(parts[2], "")
    return ""


class HostileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def hostile(self) -> HostileServer:
        return self.server.hostile  # type: ignore[attr-defined,no-any-return]

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        seen = Seen(
            endpoint=_endpoint_of(split.path), method=self.command, path=split.path,
            query=parse_qs(split.query), headers={k.lower(): v for k, v in self.headers.items()},
            body=body, at=time.monotonic(),
        )
        behaviour = self.hostile._record(seen)
        try:
            if isinstance(behaviour, Trickle):
                self._trickle(behaviour)
            elif isinstance(behaviour, Endless):
                self._endless(behaviour)
            elif isinstance(behaviour, Answer):
                self._send(behaviour.status, behaviour.body)
            elif isinstance(behaviour, EchoKey):
                key = seen.headers.get("authorization", "").removeprefix("Bearer ")
                text = behaviour.template.format(masked=mask(key))
                if behaviour.graphql:
                    self._send(200, {"errors": [{"message": text}]})
                else:
                    self._send(behaviour.status, {"error": text})
            else:
                self._send(*self.hostile._normal(seen))
        except OSError:  # the worker gave up on this answer: what the test wants to see
            self.close_connection = True

    def _send(self, status: int, body: Any) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _trickle(self, how: Trickle) -> None:
        self.close_connection = True
        stopping = self.hostile._stopping
        for byte in _trickled_bytes():
            if stopping.is_set():
                return
            self.wfile.write(byte)
            self.wfile.flush()
            stopping.wait(how.interval_s)

    def _endless(self, how: Endless) -> None:
        self.close_connection = True
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
        job = b'{"id":"endless","input":{"pad":"' + b"x" * 200 + b'"}},'
        payload = (job * (how.chunk_bytes // len(job) + 1))[: how.chunk_bytes]
        chunk = f"{len(payload):x}\r\n".encode() + payload + b"\r\n"
        first = b"1\r\n[\r\n"
        self.wfile.write(first)
        stopping = self.hostile._stopping
        try:
            while not stopping.is_set():
                self.wfile.write(chunk)
                self.hostile.endless_served += len(payload)
        finally:
            self.hostile.endless_ended.set()


def _trickled_bytes() -> Iterator[bytes]:
    yield from (bytes([b]) for b in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    yield from (bytes([b]) for b in b"X-Trickle: ")
    while True:
        yield b"a"
