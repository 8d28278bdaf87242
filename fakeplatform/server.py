"""A fake of RunPod's job API (and of its podTerminate mutation), served over real HTTP.

Exists so that the local run, the contract and integration tests, the end-to-end tests and the
benchmark have a real job API to talk to: ``python -m app fake-api --port N`` (or
``FakeJobApiServer().start()`` in a test). It speaks the protocol the HTTP adapters speak
(``adapters.runpod_job_api``), with the same URL templates RunPod injects::

    GET  /v2/fake/job-take/<worker>?...            long-polled; 200 {"id","input"} or 204
    GET  /v2/fake/job-take-batch/<worker>?batch_size=N   200 [jobs] or 204
    POST /v2/fake/job-done/<worker>/<job>?...      a result ({"output"} / {"error"}) or progress
                                                   ({"status": "IN_PROGRESS", "output"}); 404
                                                   for a job it never queued
    GET  /v2/fake/ping/<worker>?job_id=a,b         recorded
    GET  /v2/fake/job-stop/<worker>                long-polled; 204 or {"jobsToStop": [...]}
    POST /run  {"input": ..., "id"?}               queues a job: {"id", "status": "IN_QUEUE"}
    POST /cancel/<job>                             cancels it (queued: dropped; running: stop)
    GET  /status/<job>                             {"id","status"[, "output" | "error"]}
    GET  /stats                                    counters (requests by endpoint, duplicates...)
    POST /graphql                                  podTerminate (recorded in ``terminations``)
    POST|GET|DELETE /_faults                       fault injection (below)

(``/run``, ``/cancel`` and ``/status`` also answer under ``/v2/<endpoint>/``, as RunPod's do.)

What it promises: every answer is one write of head and body, with ``Content-Length``, over
HTTP/1.1 keep-alive and ``TCP_NODELAY``, so a client can make thousands of round trips a second;
long polls wait on a condition (no busy loop) and end at once on ``stop()``; ``stop()`` also
closes kept-alive connections, so a stopped server really is unreachable. When ``api_key`` is
set, take/done/ping/stop require ``Authorization`` to equal it exactly (401 otherwise); the
GraphQL endpoint always requires ``Authorization: Bearer ...`` (and exactly
``Bearer <pod_api_key>`` when that is set). A second final result for a job is counted in
``duplicates`` and a progress update after the result in ``late_progress``: tests assert both
stay empty. It is quiet: it logs nothing per request.

Fault injection, for the fault suite: ``POST /_faults`` with ``{endpoint: spec}`` (or
``{endpoint: [spec, ...]}``), or ``inject_fault(endpoint, ...)`` in Python. Endpoints are
``take`` (batch too), ``done``, ``ping``, ``stop``, ``run``, ``status``, ``cancel``, ``graphql``.
A spec is ``{"status": 503, "count": 5, "retry_after": 2, "delay_s": 3, "body": {...},
"errors": ["message"]}``: the next ``count`` requests to that endpoint (default 1) first wait
``delay_s``, then answer ``status`` (with ``Retry-After`` when given; the request is not acted
on) or, for ``graphql``, answer 200 with those GraphQL ``errors``; a spec with only ``delay_s``
delays, then answers normally. Specs queue up per endpoint, first in first out.
``DELETE /_faults`` (``clear_faults()``) drops the pending ones; ``GET /_faults`` lists them.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import email.utils
import itertools
import json
import re
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from adapters.local_jobs import read_test_inputs
from domain.errors import ConfigurationError

ENDPOINTS = frozenset({"take", "done", "ping", "stop", "run", "status", "cancel", "graphql"})
AUTHENTICATED = frozenset({"take", "done", "ping", "stop"})
MAX_BODY_BYTES = 64 * 1024 * 1024
ENDPOINT_ID = "fake"

_FAULT_KEYS = frozenset({"status", "count", "retry_after", "delay_s", "body", "errors"})
_INLINE_POD_ID = re.compile(r'podId\s*:\s*("(?:[^"\\]|\\.)*")')


@dataclass
class Fault:
    """One injected misbehaviour for the next ``count`` requests to an endpoint."""

    status: int | None = None
    count: int = 1
    retry_after: float | str | None = None
    delay_s: float = 0.0
    body: Any = None
    errors: list[str] | None = None

    @classmethod
    def from_json(cls, spec: object) -> Fault:
        """Build a fault from its JSON spec; raises ``ValueError`` saying what is wrong."""
        if not isinstance(spec, dict):
            raise ValueError("a fault spec must be a JSON object")
        unknown = set(spec) - _FAULT_KEYS
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        fault = cls(**spec)
        fault.check()
        return fault

    def check(self) -> None:
        if self.status is not None and not (
            isinstance(self.status, int) and 100 <= self.status <= 599
        ):
            raise ValueError("status must be an HTTP status code")
        if not isinstance(self.count, int) or self.count < 1:
            raise ValueError("count must be a positive integer")
        if not isinstance(self.delay_s, int | float) or not 0 <= self.delay_s <= 600:
            raise ValueError("delay_s must be between 0 and 600 seconds")
        if self.errors is not None and not (
            isinstance(self.errors, list) and all(isinstance(e, str) for e in self.errors)
        ):
            raise ValueError("errors must be a list of strings")
        if self.status is None and self.errors is None and not self.delay_s:
            raise ValueError("a fault needs status, errors or delay_s")


@dataclass
class FakeJob:
    """A job as the fake knows it."""

    id: str
    payload: Any
    status: str = "IN_QUEUE"
    worker: str | None = None
    output: Any = None
    error: Any = None
    final: bool = False
    progress: list[Any] = field(default_factory=list)


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


_EMPTY_OK = Reply(200)
_NO_CONTENT = Reply(204)


class FakeJobApiServer:
    """The fake job API on ``host:port`` (``port=0``: any free port; see ``url``).

    Python API for tests: ``submit``/``submit_raw``/``load_jobs`` queue jobs, ``cancel`` asks
    for a stop, ``status``/``stats`` read, ``inject_fault``/``clear_faults`` misbehave,
    ``wait_until`` blocks until a condition holds. What it recorded is in plain attributes:
    ``results`` (job id -> the first final body), ``progress`` ((job id, output) in order),
    ``pings`` ((worker, job ids)), ``duplicates``, ``late_progress``, ``taken``,
    ``terminations`` (pod ids), ``requests`` (a Counter by endpoint), ``authorizations`` (a
    Counter by endpoint and ``Authorization`` header).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        long_poll_s: float = 1.0,
        api_key: str | None = None,
        pod_api_key: str | None = None,
    ) -> None:
        self.long_poll_s = long_poll_s
        self._api_key = api_key
        self._pod_api_key = pod_api_key
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._queue: collections.deque[tuple[str | None, Any]] = collections.deque()
        self._stops: dict[str, list[str]] = {}
        self._faults: dict[str, collections.deque[Fault]] = {}
        self._ids = itertools.count(1)
        self._open: set[socket.socket] = set()
        self.jobs: dict[str, FakeJob] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.progress: list[tuple[str, Any]] = []
        self.pings: list[tuple[str, tuple[str, ...]]] = []
        self.duplicates: list[str] = []
        self.late_progress: list[str] = []
        self.taken: list[str] = []
        self.terminations: list[str] = []
        self.requests: collections.Counter[str] = collections.Counter()
        # (endpoint, Authorization header as received, "" when absent): which credentials
        # reached which endpoint, for the security tests
        self.authorizations: collections.Counter[tuple[str, str]] = collections.Counter()
        self.connections = 0
        self._active = 0
        self.unauthorized = 0
        self.faults_served = 0
        self._httpd = _Server((host, port), _Handler)
        self._httpd.fake = self
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FakeJobApiServer({self.url!r})"

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
    def take_url(self) -> str:
        return f"{self.url}/v2/{ENDPOINT_ID}/job-take/$ID?gpu=fake"

    @property
    def result_url(self) -> str:
        return f"{self.url}/v2/{ENDPOINT_ID}/job-done/$RUNPOD_POD_ID/$ID?gpu=fake"

    @property
    def ping_url(self) -> str:
        return f"{self.url}/v2/{ENDPOINT_ID}/ping/$RUNPOD_POD_ID?gpu=fake"

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    # --- feeding it ---------------------------------------------------------------------
    def submit(self, job_input: Any, job_id: str | None = None) -> str:
        """Queue ``{"id", "input"}``; returns the id. Raises ``ValueError`` on a taken id."""
        job_id = job_id if job_id is not None else self._new_id()
        self.submit_raw({"id": job_id, "input": job_input})
        return job_id

    def submit_raw(self, payload: Any) -> str | None:
        """Queue ``payload`` exactly as take will hand it out (for malformed-job tests).

        Returns its id when it has a readable one (then its result is accepted), else None.
        """
        raw_id = payload.get("id") if isinstance(payload, dict) else None
        job_id = str(raw_id) if isinstance(raw_id, str | int) and raw_id != "" else None
        with self._cond:
            if job_id is not None:
                if job_id in self.jobs:
                    raise ValueError(f"job id {job_id!r} is already used")
                self.jobs[job_id] = FakeJob(job_id, payload)
            self._queue.append((job_id, payload))
            self._cond.notify_all()
        return job_id

    def load_jobs(self, path: Path) -> list[str | None]:
        """Queue the jobs of a ``test_inputs.json``-style file (one job or a list)."""
        return [self.submit_raw(job) for job in read_test_inputs(path)]

    def cancel(self, job_id: str) -> str | None:
        """Cancel a job: a queued one is dropped, a running one is sent to its worker's
        job-stop poll. Returns the job's status, None for an unknown job."""
        with self._cond:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            if not job.final and job.status in ("IN_QUEUE", "IN_PROGRESS"):
                if job.status == "IN_QUEUE":
                    self._queue = collections.deque(e for e in self._queue if e[0] != job_id)
                elif job.worker is not None:
                    self._stops.setdefault(job.worker, []).append(job_id)
                job.status = "CANCELLED"
                self._cond.notify_all()
            return job.status

    # --- reading it ---------------------------------------------------------------------
    def status(self, job_id: str) -> dict[str, Any] | None:
        """``{"id", "status"[, "output" | "error"]}`` as ``GET /status`` says; None if unknown."""
        with self._cond:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            answer: dict[str, Any] = {"id": job.id, "status": job.status}
            if job.final:
                if job.error is not None:
                    answer["error"] = job.error
                else:
                    answer["output"] = job.output
            return answer

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
                "pings": len(self.pings),
                "terminations": len(self.terminations),
                "queued": len(self._queue),
                "unauthorized": self.unauthorized,
                "faults_served": self.faults_served,
            }

    def wait_until(
        self, predicate: Callable[[FakeJobApiServer], bool], timeout: float = 5.0
    ) -> bool:
        """Block until ``predicate(self)`` holds (checked on every change) or ``timeout`` s."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def wait_for_results(self, count: int, timeout: float = 5.0) -> bool:
        return self.wait_until(lambda s: len(s.results) >= count, timeout)

    # --- faults -------------------------------------------------------------------------
    def inject_fault(
        self,
        endpoint: str,
        *,
        status: int | None = None,
        count: int = 1,
        retry_after: float | str | None = None,
        delay_s: float = 0.0,
        body: Any = None,
        errors: list[str] | None = None,
    ) -> None:
        """Make the next ``count`` requests to ``endpoint`` misbehave (see the module doc)."""
        fault = Fault(status, count, retry_after, delay_s, body, errors)
        fault.check()
        self._add_faults({endpoint: [fault]})

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()

    def pending_faults(self) -> dict[str, list[dict[str, Any]]]:
        with self._cond:
            return {k: [asdict(f) for f in q] for k, q in self._faults.items() if q}

    def _add_faults(self, faults: Mapping[str, Sequence[Fault]]) -> None:
        unknown = set(faults) - ENDPOINTS
        if unknown:
            raise ValueError(f"unknown endpoints {sorted(unknown)}; known: {sorted(ENDPOINTS)}")
        with self._cond:
            for endpoint, specs in faults.items():
                self._faults.setdefault(endpoint, collections.deque()).extend(specs)

    def _next_fault(self, endpoint: str) -> Fault | None:
        with self._cond:
            pending = self._faults.get(endpoint)
            if not pending:
                return None
            fault = pending[0]
            fault.count -= 1
            if fault.count <= 0:
                pending.popleft()
            self.faults_served += 1
            return fault

    # --- HTTP ---------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one request (called by the HTTP handler; usable directly in tests).

        ``headers`` has lower-case names.
        """
        split = urlsplit(target)
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        query = parse_qs(split.query, keep_blank_values=True)
        rest = segments[2:] if segments[:1] == ["v2"] and len(segments) > 2 else segments
        route = rest[0] if rest else ""
        args = rest[1:]
        if route == "stats" and method == "GET":
            return Reply.json(200, self.stats())
        if route == "_faults":
            return self._faults_endpoint(method, body)
        endpoint, handler = self._route(method, route, args)
        if handler is None:
            return Reply.json(404, {"error": f"no such endpoint: {method} {split.path}"})
        with self._cond:
            self.requests[endpoint] += 1
            self.authorizations[endpoint, headers.get("authorization", "")] += 1
            self._cond.notify_all()
        fault = self._next_fault(endpoint)
        if fault is not None:
            if fault.delay_s:
                self._stopping.wait(fault.delay_s)
            if fault.status is not None:
                extra = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
                return Reply.json(fault.status, fault.body or {"error": "injected fault"}, extra)
            if fault.errors is not None and endpoint == "graphql":
                return Reply.json(200, _graphql_errors(fault.errors))
        if (
            endpoint in AUTHENTICATED
            and self._api_key is not None
            and headers.get("authorization") != self._api_key
        ):
            with self._cond:
                self.unauthorized += 1
            return Reply.json(401, {"error": "unauthorized"})
        return handler(args, query, headers, body)

    def _route(
        self, method: str, route: str, args: list[str]
    ) -> tuple[str, Callable[..., Reply] | None]:
        table: dict[tuple[str, str, int], tuple[str, Callable[..., Reply]]] = {
            ("GET", "job-take", 1): ("take", self._take),
            ("GET", "job-take-batch", 1): ("take", self._take_batch),
            ("POST", "job-done", 2): ("done", self._done),
            ("GET", "ping", 1): ("ping", self._ping),
            ("GET", "job-stop", 1): ("stop", self._stop),
            ("POST", "run", 0): ("run", self._run),
            ("POST", "cancel", 1): ("cancel", self._cancel),
            ("GET", "status", 1): ("status", self._status),
            ("POST", "graphql", 0): ("graphql", self._graphql),
        }
        found = table.get((method, route, len(args)))
        return found if found is not None else ("", None)

    def _take(self, args: list[str], query: dict[str, list[str]], *_: Any) -> Reply:
        handed = self._hand_out(args[0], 1)
        return Reply.json(200, handed[0]) if handed else _NO_CONTENT

    def _take_batch(self, args: list[str], query: dict[str, list[str]], *_: Any) -> Reply:
        try:
            size = max(1, min(1000, int(query.get("batch_size", ["1"])[0])))
        except ValueError:
            return Reply.json(400, {"error": "batch_size must be an integer"})
        handed = self._hand_out(args[0], size)
        return Reply.json(200, handed) if handed else _NO_CONTENT

    def _hand_out(self, worker: str, size: int) -> list[Any]:
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._stopping.is_set(), self.long_poll_s)
            handed: list[Any] = []
            while self._queue and len(handed) < size:
                job_id, payload = self._queue.popleft()
                if job_id is not None:
                    job = self.jobs[job_id]
                    job.status, job.worker = "IN_PROGRESS", worker
                    self.taken.append(job_id)
                handed.append(payload)
            if handed:
                self._cond.notify_all()
            return handed

    def _done(self, args: list[str], query: Any, headers: Any, body: bytes) -> Reply:
        _worker, job_id = args
        try:
            data = json.loads(body)  # whatever the Content-Type says, as RunPod does
        except ValueError:
            return Reply.json(400, {"error": "the body is not JSON"})
        if not isinstance(data, dict):
            return Reply.json(400, {"error": "the body must be a JSON object"})
        with self._cond:
            job = self.jobs.get(job_id)
            if job is None:
                return Reply.json(404, {"error": "unknown job"})
            if data.get("status") == "IN_PROGRESS":
                self.progress.append((job_id, data.get("output")))
                job.progress.append(data.get("output"))
                if job.final:
                    self.late_progress.append(job_id)
            elif job.final:
                self.duplicates.append(job_id)
            else:
                job.final, job.output, job.error = True, data.get("output"), data.get("error")
                self.results[job_id] = data
                if job.status != "CANCELLED":
                    # The platform marks a job failed only when "error" is a string.
                    job.status = "FAILED" if isinstance(job.error, str) else "COMPLETED"
            self._cond.notify_all()
        return _EMPTY_OK

    def _ping(self, args: list[str], query: dict[str, list[str]], *_: Any) -> Reply:
        raw = ",".join(query.get("job_id", []))
        ids = tuple(i for i in raw.split(",") if i)
        with self._cond:
            self.pings.append((args[0], ids))
            self._cond.notify_all()
        return _EMPTY_OK

    def _stop(self, args: list[str], *_: Any) -> Reply:
        worker = args[0]
        with self._cond:
            self._cond.wait_for(
                lambda: self._stops.get(worker) or self._stopping.is_set(), self.long_poll_s
            )
            ids = self._stops.pop(worker, [])
        return Reply.json(200, {"jobsToStop": ids}) if ids else _NO_CONTENT

    def _run(self, args: list[str], query: Any, headers: Any, body: bytes) -> Reply:
        try:
            data = json.loads(body)
        except ValueError:
            return Reply.json(400, {"error": "the body is not JSON"})
        if not isinstance(data, dict) or "input" not in data:
            return Reply.json(400, {"error": 'the body must be {"input": ...}'})
        raw_id = data.get("id")
        if raw_id is not None and (not isinstance(raw_id, str) or not raw_id):
            return Reply.json(400, {"error": "id must be a non-empty string"})
        try:
            job_id = self.submit(data["input"], raw_id)
        except ValueError as exc:
            return Reply.json(409, {"error": str(exc)})
        return Reply.json(200, {"id": job_id, "status": "IN_QUEUE"})

    def _cancel(self, args: list[str], *_: Any) -> Reply:
        status = self.cancel(args[0])
        if status is None:
            return Reply.json(404, {"error": "unknown job"})
        return Reply.json(200, {"id": args[0], "status": status})

    def _status(self, args: list[str], *_: Any) -> Reply:
        answer = self.status(args[0])
        return Reply.json(404, {"error": "unknown job"}) if answer is None else Reply.json(
            200, answer
        )

    def _graphql(self, args: list[str], query: Any, headers: Mapping[str, str],
                 body: bytes) -> Reply:
        auth = headers.get("authorization") or ""
        wanted = None if self._pod_api_key is None else f"Bearer {self._pod_api_key}"
        if not auth.startswith("Bearer ") or (wanted is not None and auth != wanted):
            with self._cond:
                self.unauthorized += 1
            return Reply.json(401, {"errors": [{"message": "Unauthorized"}]})
        try:
            data = json.loads(body)
        except ValueError:
            return Reply.json(400, {"errors": [{"message": "the body is not JSON"}]})
        text = data.get("query") if isinstance(data, dict) else None
        if not isinstance(text, str) or "podTerminate" not in text:
            return Reply.json(200, _graphql_errors(["the fake knows only podTerminate"]))
        pod_id = _pod_id_of(data, text)
        if pod_id is None:
            return Reply.json(200, _graphql_errors(["podId is required"]))
        with self._cond:
            self.terminations.append(pod_id)
            self._cond.notify_all()
        return Reply.json(200, {"data": {"podTerminate": None}})

    def _faults_endpoint(self, method: str, body: bytes) -> Reply:
        if method == "GET":
            return Reply.json(200, self.pending_faults())
        if method == "DELETE":
            self.clear_faults()
            return Reply.json(200, {})
        if method != "POST":
            return Reply.json(405, {"error": "use GET, POST or DELETE"})
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("the body must be {endpoint: spec or [spec, ...]}")
            parsed = {
                endpoint: [Fault.from_json(s) for s in (spec if isinstance(spec, list) else [spec])]
                for endpoint, spec in data.items()
            }
            self._add_faults(parsed)
        except (ValueError, TypeError) as exc:
            return Reply.json(400, {"error": str(exc)})
        return Reply.json(200, self.pending_faults())

    def _new_id(self) -> str:
        with self._cond:
            while True:
                job_id = f"job-{next(self._ids)}"
                if job_id not in self.jobs:
                    return job_id

    def _opened(self, conn: socket.socket) -> None:
        with self._cond:
            self._open.add(conn)
            self.connections += 1
        if self._stopping.is_set():  # accepted just before stop(): no service from here on
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _begin(self) -> None:
        with self._cond:
            self._active += 1

    def _end(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def _closed(self, conn: socket.socket) -> None:
        with self._cond:
            self._open.discard(conn)


def _graphql_errors(messages: Sequence[str]) -> dict[str, Any]:
    return {
        "errors": [{"message": m, "path": ["podTerminate"]} for m in messages],
        "data": {"podTerminate": None},
    }


def _pod_id_of(data: dict[str, Any], query: str) -> str | None:
    variables = data.get("variables")
    if isinstance(variables, dict) and isinstance(variables.get("podId"), str):
        return str(variables["podId"])
    match = _INLINE_POD_ID.search(query)
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return value if isinstance(value, str) else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    fake: FakeJobApiServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that drops its keep-alive connection (a worker killed by a test, say) is
        # normal here: stay quiet. Anything else is a bug in the fake: show it.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
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
    def fake(self) -> FakeJobApiServer:
        return cast(_Server, self.server).fake

    def setup(self) -> None:
        super().setup()
        self.fake._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.fake._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a request is not worth a line."""

    def parse_request(self) -> bool:
        """Read the request line and headers into ``lower_headers`` (a plain dict).

        The standard parser builds an ``email.message.Message`` per request, which is most of
        the server's CPU time per request; this one is a few string operations. Anything but a
        plain ``METHOD target HTTP/1.x`` line goes to the standard parser (and its errors).
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
        if self.fake._stopping.is_set():
            # a stopped server acts on nothing: drop the connection unanswered, as a dead one
            # would (a request that slipped in while stop() ran must not be recorded)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.fake._begin()
        try:
            body = self._read_body()
            if body is None:
                reply = Reply.json(413, {"error": "body too large"})
                self.close_connection = True
            else:
                try:
                    reply = self.fake.handle(method, self.path, self.lower_headers, body)
                except Exception as exc:  # the fake must answer, whatever went wrong
                    reply = Reply.json(500, {"error": f"fake job API failed: {exc!r}"})
            self._send(reply)
        finally:
            self.fake._end()

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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m app fake-api``: serve the fake until SIGINT/SIGTERM.

    Prints the base URL and the settings a worker needs, one ``NAME='value'`` a line (values
    single-quoted so the ``$ID`` placeholders survive a shell or a ``.env`` file).
    """
    parser = argparse.ArgumentParser(
        prog="python -m app fake-api", description="Serve a fake RunPod job API."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--jobs", type=Path, help="a test_inputs.json-style file to queue")
    parser.add_argument("--long-poll", type=float, default=1.0, dest="long_poll",
                        help="longest wait of a take or job-stop request, seconds (1.0)")
    parser.add_argument("--api-key", help="require this Authorization on the job API")
    parser.add_argument("--pod-api-key", help="require 'Bearer <this>' on /graphql")
    args = parser.parse_args(argv)
    try:
        server = FakeJobApiServer(args.host, args.port, long_poll_s=args.long_poll,
                                  api_key=args.api_key, pod_api_key=args.pod_api_key)
    except OSError as exc:
        print(f"fake-api: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
    with server:
        if args.jobs is not None:
            try:
                count = len(server.load_jobs(args.jobs))
            except ConfigurationError as exc:
                print(f"fake-api: {exc}", file=sys.stderr)
                return 2
            print(f"# queued {count} job(s) from {args.jobs}")
        print(f"# fake job API listening on {server.url} (Ctrl-C to stop)")
        print(f"FAKE_API_URL='{server.url}'")
        print(f"WEBHOOK_GET_WORK='{server.take_url}'")
        print(f"WEBHOOK_POST_OUTPUT='{server.result_url}'")
        print(f"WEBHOOK_PING='{server.ping_url}'")
        print(f"RUNPOD_API_URL='{server.graphql_url}'", flush=True)
        while not done.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
