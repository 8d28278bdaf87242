"""A loopback HTTP server for image-fetching tests: routes answer as told and every request is
recorded (path and ``Host`` header), so a test can show that a refused URL was never requested.

Routes are ``path -> Route``. A route answers a status, headers and a body; ``trickle_s`` sends
the body a byte at a time with that pause between bytes (waiting on the server's stop event,
so stopping the server ends a trickle at once). Bind it to any loopback address
(``127.0.0.2`` works on Linux, where all of 127/8 is the loopback interface).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    trickle_s: float | None = None


class ImageServer:
    def __init__(self, routes: dict[str, Route] | None = None, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Host", "")))
                route = server.routes.get(self.path.split("?")[0], Route(404, b"not found"))
                self.send_response(route.status)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                try:
                    if route.trickle_s is None:
                        self.wfile.write(route.body)
                        return
                    for i in range(len(route.body)):
                        if server.stopping.wait(route.trickle_s):
                            return
                        self.wfile.write(route.body[i : i + 1])
                        self.wfile.flush()
                except OSError:
                    return  # the client hung up: what the deadline tests want

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
