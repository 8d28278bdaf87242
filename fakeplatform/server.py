"""The fake platform served over real HTTP: routing, credentials, faults, and its life.

Routes (the first two path segments ``/v2/<endpoint id>`` are optional and any endpoint id is
accepted; the URL templates below are those RunPod injects into a worker)::

    GET  /v2/fake/job-take/<worker>?...              long-polled; 200 {"id","input"} or 204
    GET  /v2/fake/job-take-batch/<worker>?batch_size=N   200 [jobs] or 204
    POST /v2/fake/job-done/<worker>/<job>?...        a result or a progress update
    POST /v2/fake/job-stream/<worker>/<job>?...      {"output": chunk}
    GET  /v2/fake/ping/<worker>?job_id=a,b           recorded
    GET  /v2/fake/job-stop/<worker>                  long-polled; 204 or {"jobsToStop": [...]}
    POST /graphql                                    podTerminate
    /run /runsync /status /stream /cancel /retry /health /purge-queue   (``client_routes``)
    GET  /stats                                      counters (requests by endpoint, ...)
    POST|GET|DELETE /_faults                         fault injection (``faults``)

When ``api_key`` is set, the worker's routes (take, done, stream, ping, stop) require
``Authorization`` to equal it exactly (401 otherwise); ``/graphql`` always requires
``Authorization: Bearer ...`` (exactly ``Bearer <pod_api_key>`` when that is set). Long polls
end at once on ``stop()``, which also closes kept-alive connections: a stopped server really is
unreachable. It logs nothing per request.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from fakeplatform import client_routes, worker_routes
from fakeplatform.faults import Fault, FaultBook, graphql_errors
from fakeplatform.state import PlatformState
from fakeplatform.wire import Reply, WireServer
from fakeplatform.worker_routes import Request

ENDPOINT_ID = "fake"
RUNSYNC_WAIT_S = 90.0  # how long /runsync waits for a final status, as the platform does

Route = Callable[[PlatformState, Request], Reply]


class FakeJobApiServer(PlatformState):
    """The fake platform on ``host:port`` (``port=0``: any free port; see ``url``).

    For tests: ``submit``/``submit_raw`` queue jobs, ``cancel``/``retry``/
    ``purge``, ``status``/``stats``/``health`` read, ``inject_fault``/``clear_faults``
    misbehave, ``wait_until`` blocks until a condition holds. Besides what ``PlatformState``
    records: ``requests`` (a Counter by endpoint), ``authorizations`` (a Counter by endpoint
    and ``Authorization`` header, "" when absent), ``connections``, ``unauthorized``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        long_poll_s: float = 1.0,
        api_key: str | None = None,
        pod_api_key: str | None = None,
        runsync_wait_s: float = RUNSYNC_WAIT_S,
    ) -> None:
        super().__init__(long_poll_s)
        self._api_key = api_key
        self._pod_api_key = pod_api_key
        self._faults = FaultBook()
        self._open: set[socket.socket] = set()
        self._active = 0
        self.requests: collections.Counter[str] = collections.Counter()
        self.authorizations: collections.Counter[tuple[str, str]] = collections.Counter()
        self.connections = 0
        self.unauthorized = 0
        w, c = worker_routes, client_routes
        # (method, first segment, number of arguments) -> (endpoint name, auth, route)
        self._routes: dict[tuple[str, str, int], tuple[str, str, Route]] = {
            ("GET", "job-take", 1): ("take", "key", w.take),
            ("GET", "job-take-batch", 1): ("take", "key", w.take_batch),
            ("POST", "job-done", 2): ("done", "key", w.done),
            ("POST", "job-stream", 2): ("stream", "key", w.stream),
            ("GET", "ping", 1): ("ping", "key", w.ping),
            ("GET", "job-stop", 1): ("stop", "key", w.job_stop),
            ("POST", "graphql", 0): ("graphql", "bearer", w.graphql),
            ("POST", "run", 0): ("run", "", c.run),
            ("POST", "runsync", 0): ("runsync", "", c.runsync(runsync_wait_s)),
            ("GET", "status", 1): ("status", "", c.status),
            ("GET", "stream", 1): ("stream_status", "", c.stream),
            ("POST", "cancel", 1): ("cancel", "", c.cancel),
            ("POST", "retry", 1): ("retry", "", c.retry),
            ("GET", "health", 0): ("health", "", c.health),
            ("POST", "purge-queue", 0): ("purge_queue", "", c.purge_queue),
        }
        self._httpd = WireServer((host, port), self)
        self._thread: threading.Thread | None = None
        self._stopped = False

    # --- life ---------------------------------------------------------------------------
    def start(self) -> FakeJobApiServer:
        """Serve in a background (daemon) thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="fake-job-api",
                                            daemon=True)
            self._thread.start()
        return self

    def _serve(self) -> None:
        # One blocking accept at a time (no polling interval); stop() wakes it with a
        # connection of its own.
        while not self._stopping.is_set():
            self._httpd.handle_request()

    def stop(self) -> None:
        """End long polls, stop serving, and close every open connection. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            with contextlib.suppress(OSError), socket.create_connection(self._wake_address(), 1):
                pass
            self._thread.join(timeout=5)
        self._httpd.server_close()
        with self._cond:
            # Requests in flight (long polls just woken, delays just cut short) answer first.
            self._cond.wait_for(lambda: self._active == 0, timeout=2)
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _wake_address(self) -> tuple[str, int]:
        host, port = self.address
        return ("127.0.0.1" if host in ("0.0.0.0", "") else host), port

    def __enter__(self) -> FakeJobApiServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FakeJobApiServer({self.url!r})"

    # --- what the wire server asks (wire.Site) --------------------------------------------
    def is_stopping(self) -> bool:
        return self._stopping.is_set()

    def connection_opened(self, conn: socket.socket) -> None:
        with self._cond:
            self._open.add(conn)
            self.connections += 1
        if self._stopping.is_set():  # accepted just before stop(): no service from here on
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def connection_closed(self, conn: socket.socket) -> None:
        with self._cond:
            self._open.discard(conn)

    def request_began(self) -> None:
        with self._cond:
            self._active += 1

    def request_ended(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    # --- URLs ---------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` it listens on."""
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    @property
    def endpoint_url(self) -> str:
        """The client API's base for ``runpod.Endpoint`` (``runpod.endpoint_url_base``)."""
        return f"{self.url}/v2"

    @property
    def take_url(self) -> str:
        return f"{self.url}/v2/{ENDPOINT_ID}/job-take/$ID?gpu=fake"

    @property
    def result_url(self) -> str:
        return f"{self.url}/v2/{ENDPOINT_ID}/job-done/$RUNPOD_POD_ID/$ID?gpu=fake"

    @property
    def stream_url(self) -> str:
        return f"{self.url}/v2/{ENDPOINT_ID}/job-stream/$RUNPOD_POD_ID/$ID?gpu=fake"

    @property
    def ping_url(self) -> str:
        return f"{self.url}/v2/{ENDPOINT_ID}/ping/$RUNPOD_POD_ID?gpu=fake"

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    # --- reading -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "requests": dict(self.requests),
                "connections": self.connections,
                "takes": len(self.taken),
                "results": len(self.results),
                "duplicates": len(self.duplicates),
                "progress": len(self.progress),
                "late_progress": len(self.late_progress),
                "streamed": len(self.streamed),
                "pings": len(self.pings),
                "terminations": len(self.terminations),
                "queued": len(self._queue),
                "unauthorized": self.unauthorized,
                "faults_served": self.faults_served,
            }

    # --- faults -------------------------------------------------------------------------
    def inject_fault(self, endpoint: str, *, status: int | None = None, count: int = 1,
                     retry_after: float | str | None = None, delay_s: float = 0.0,
                     body: Any = None, errors: list[str] | None = None) -> None:
        """Make the next ``count`` requests to ``endpoint`` misbehave (see ``faults``)."""
        fault = Fault(status, count, retry_after, delay_s, body, errors)
        fault.check()
        self._faults.add({endpoint: [fault]})

    @property
    def faults_served(self) -> int:
        return self._faults.served

    def clear_faults(self) -> None:
        self._faults.clear()

    def pending_faults(self) -> dict[str, list[dict[str, Any]]]:
        return self._faults.listing()

    # --- HTTP ---------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one request (from the HTTP server, or a test); ``headers`` lower-case."""
        path, _, query_text = target.partition("?")
        segments = [unquote(s) for s in path.split("/")[1:]]
        rest = segments[2:] if segments[:1] == ["v2"] and len(segments) > 2 else segments
        route, args = (rest[0] if rest else ""), rest[1:]
        found = self._routes.get((method, route, len(args)))
        if found is None:
            if route == "stats" and method == "GET":
                return Reply.json(200, self.stats())
            if route == "_faults":
                return Reply.json(*self._faults.answer(method, body))
            return Reply.json(404, {"error": f"no such endpoint: {method} {urlsplit(path).path}"})
        endpoint, auth, handler = found
        authorization = headers.get("authorization", "")
        with self._cond:
            self.requests[endpoint] += 1
            self.authorizations[endpoint, authorization] += 1
            self._cond.notify_all()
        fault = self._faults.next(endpoint)
        if fault is not None:
            if fault.delay_s:
                self._stopping.wait(fault.delay_s)
            if fault.status is not None:
                extra = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
                return Reply.json(fault.status, fault.body or {"error": "injected fault"}, extra)
            if fault.errors is not None and endpoint == "graphql":
                return Reply.json(200, graphql_errors(fault.errors))
        refused = self._refuse(auth, authorization)
        if refused is not None:
            return refused
        query = parse_qs(query_text, keep_blank_values=True) if query_text else {}
        return handler(self, Request(args, query, headers, body))

    def _refuse(self, auth: str, authorization: str) -> Reply | None:
        if auth == "key":
            if self._api_key is None or authorization == self._api_key:
                return None
            answer = Reply.json(401, {"error": "unauthorized"})
        elif auth == "bearer":
            wanted = None if self._pod_api_key is None else f"Bearer {self._pod_api_key}"
            if authorization.startswith("Bearer ") and wanted in (None, authorization):
                return None
            answer = Reply.json(401, {"errors": [{"message": "Unauthorized"}]})
        else:
            return None
        with self._cond:
            self.unauthorized += 1
        return answer
