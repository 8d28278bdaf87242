"""The optional health port: ``/health`` (the worker's state) and ``/metrics`` (Prometheus).

It runs on its own daemon thread with its own HTTP server and only reads the worker's state
and counters, so a slow or stuck scraper never blocks the job loop. prometheus-client is
imported here, only when HEALTH_PORT is set.

``/health`` answers 200 while the worker is ``ready`` or ``busy`` and 503 while it is
``starting``, ``startup_failed``, ``draining`` or ``stopped``, with ``{"state", "jobs_in_flight",
"undelivered_results", "seconds_since_last_job"}``; while starting, also the start-up's
``phase``, ``phase_seconds`` and ``startup_seconds``; after a failed start, its ``phase`` and
``error``; ``failed_starts_in_a_row`` when the starts before this one failed.

Whoever can reach the port can open connections to it, so each one is bounded: at most
``MAX_CONNECTIONS`` are served at once (more are closed as soon as they are accepted), each
answers one request and is cut ``CONNECTION_DEADLINE_S`` after it was accepted, however slowly
its client sends (the shared watchdog of :mod:`adapters.http.deadlines` shuts its socket). An
idle or trickling client costs a thread and a descriptor for seconds, never for ever, and never
the descriptors the outbox needs. It has no authentication: it shows the state, the counters and
the start-up's phase (no job ids, inputs or secrets); ``HEALTH_HOST=127.0.0.1`` keeps it to the
pod itself.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from adapters.http.deadlines import WATCHDOG, Guard
from app.metrics import BUCKETS, COUNTERS, STAGES
from app.stages import WorkerState

if TYPE_CHECKING:
    from app.worker import Worker

HEALTHY = {"ready", "busy"}
MAX_CONNECTIONS = 16
"""Connections served at once; a prober and a scraper need one or two."""
CONNECTION_DEADLINE_S = 5.0
"""Longest a connection is held, from accept to the end of its one answer."""


class _MetricsCollector:
    """Renders the worker's ``Metrics`` as Prometheus metric families when scraped."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        metrics = self._worker.metrics
        counters, stages = metrics.snapshot()
        for name, text in COUNTERS.items():
            family = CounterMetricFamily(f"podworker_{name}", text)
            family.add_metric([], counters[name])
            yield family
        histogram = HistogramMetricFamily(
            "podworker_stage_seconds", "Time spent per job in each stage.", labels=["stage"]
        )
        for stage in STAGES:
            buckets, total, count = stages[stage]
            cumulative, running = [], 0
            for bound, n in zip(BUCKETS, buckets, strict=True):
                running += n
                cumulative.append((str(bound), running))
            cumulative.append(("+Inf", count))
            histogram.add_metric([stage], cumulative, total)
        yield histogram
        for name, (text, read) in list(metrics.gauges.items()):
            gauge = GaugeMetricFamily(f"podworker_{name}", text)
            try:
                gauge.add_metric([], float(read()))
            except Exception:  # a gauge must never break the scrape
                continue
            yield gauge
        state = GaugeMetricFamily("podworker_state", "1 for the worker's current state.",
                                  labels=["state"])
        for value in WorkerState:
            state.add_metric([value.value], 1.0 if self._worker.snapshot.state is value else 0.0)
        yield state
        yield from _startup_families(self._worker)


def _startup_families(worker: Worker) -> Iterator[Any]:
    """The start-up's phases (seconds each, the running one so far), the phase running now,
    the whole start's seconds, and the failed starts before this one."""
    from prometheus_client.core import GaugeMetricFamily

    startup = worker.startup
    phases = GaugeMetricFamily("podworker_startup_phase_seconds",
                               "Seconds spent in each start-up phase (the running one so far).",
                               labels=["phase"])
    for name, seconds in startup.seconds().items():
        phases.add_metric([name], seconds)
    yield phases
    running, _ = startup.current()
    current = GaugeMetricFamily("podworker_startup_phase",
                                "1 for the start-up phase running now (none once started).",
                                labels=["phase"])
    if running is not None:
        current.add_metric([running], 1.0)
    yield current
    yield GaugeMetricFamily("podworker_startup_seconds",
                            "Seconds of the start-up (so far, while starting).",
                            value=startup.elapsed())
    yield GaugeMetricFamily("podworker_failed_starts_in_a_row",
                            "Starts that failed in a row before this one (a crash loop).",
                            value=float(worker.failed_starts_before))


def health_report(worker: Worker) -> tuple[int, dict[str, Any]]:
    snapshot = worker.snapshot
    state = snapshot.state.value
    body = {
        "state": state,
        "jobs_in_flight": len(snapshot.in_flight),
        "undelivered_results": snapshot.undelivered,
        "seconds_since_last_job": round(worker.clock.now() - snapshot.last_activity, 3),
    }
    body.update(_startup_report(worker, snapshot.state))
    return (200 if state in HEALTHY else 503), body


def _startup_report(worker: Worker, state: WorkerState) -> dict[str, Any]:
    report: dict[str, Any] = {}
    if state is WorkerState.STARTING:
        phase, seconds = worker.startup.current()
        report = {"phase": phase, "phase_seconds": round(seconds, 3),
                  "startup_seconds": round(worker.startup.elapsed(), 3)}
    failure = worker.start_failure
    if failure is not None:
        report = {"phase": failure.phase, "error": failure.error[:500]}
    if worker.failed_starts_before:
        report["failed_starts_in_a_row"] = worker.failed_starts_before
    return report


class HealthServer:
    """``/health`` and ``/metrics`` for one worker, on a daemon thread."""

    def __init__(self, worker: Worker, host: str, port: int) -> None:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_MetricsCollector(worker))

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = CONNECTION_DEADLINE_S  # each read; the guard bounds the whole

            def setup(self) -> None:
                self._guard = Guard(time.monotonic() + CONNECTION_DEADLINE_S)
                self._guard.conn = SimpleNamespace(sock=self.request)
                WATCHDOG.arm(self._guard)
                super().setup()

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    self._guard.done = True

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/health":
                    status, body = health_report(worker)
                    self._send(status, "application/json", json.dumps(body).encode())
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                else:
                    self._send(404, "application/json", b'{"error": "not found"}')

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")  # one request per connection
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = _BoundedServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health",
                                        daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most ``MAX_CONNECTIONS`` of them; more are closed at once."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: this one is dropped, the server goes on
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client cut at its deadline, or gone: nothing to report."""


def start_health_server(worker: Worker, host: str, port: int) -> HealthServer:
    return HealthServer(worker, host, port).start()
