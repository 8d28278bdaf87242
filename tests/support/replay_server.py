"""A loopback HTTP server that answers every request with one recorded response.

It exists for the contract tests (serve a recording from ``contracts/``, capture what the real
adapter sent) and for integration tests that need an answer the fake job API has no reason to
give (an unreadable body, a ``Retry-After`` date). Each request is captured in ``captured``;
``responses`` are served in order, the last one repeated.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Captured:
    """One request as the server received it (header names lower-cased)."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Recorded:
    """A response to serve: status, headers, and a JSON or text body (or none)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def from_contract(cls, response: Mapping[str, Any]) -> Recorded:
        if "json" in response:
            body = json.dumps(response["json"]).encode()
        else:
            body = str(response.get("text", "")).encode()
        return cls(int(response["status"]), dict(response.get("headers", {})), body)


class ReplayServer:
    """Serves ``responses`` (the last one repeated) and records every request."""

    def __init__(self, *responses: Recorded) -> None:
        if not responses:
            raise ValueError("give at least one response")
        self.responses = list(responses)
        self.captured: list[Captured] = []
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.replay = self
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ReplayServer:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self._httpd.handle_request()  # blocks; stop() wakes it with a connection

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            with socket.create_connection(self._httpd.server_address[:2], 1):  # type: ignore[arg-type]
                pass
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _answer(self, request: Captured) -> Recorded:
        with self._lock:
            index = min(len(self.captured), len(self.responses) - 1)
            self.captured.append(request)
            return self.responses[index]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    replay: ReplayServer

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # no reverse DNS lookup
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Captured(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
        )
        answer = cast(_Server, self.server).replay._answer(request)
        reason = self.responses.get(answer.status, ("",))[0]
        lines = [f"HTTP/1.1 {answer.status} {reason}"]
        if answer.status not in (204, 304):
            lines.append(f"Content-Length: {len(answer.body)}")
        lines.extend(f"{k}: {v}" for k, v in answer.headers.items())
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + answer.body)
