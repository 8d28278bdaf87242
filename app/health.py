"""The optional health port: ``/health`` (the worker's state) and ``/metrics`` (Prometheus).

It runs on its own daemon thread with its own HTTP server and only reads the worker's state
and counters, so a slow or stuck scraper never blocks the job loop. prometheus-client is
imported here, only when HEALTH_PORT is set.

``/health`` answers 200 while the worker is ``ready`` or ``busy`` and 503 while it is
``starting``, ``startup_failed``, ``draining`` or ``stopped``, with ``{"state", "jobs_in_flight",
"undelivered_results", "seconds_since_last_job"}``; while starting, also the start-up's
``phase``, ``phase_seconds`` and ``startup_seconds``; after a failed start, its ``phase`` and
``error``; ``failed_starts_in_a_row`` when the starts before this one failed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from app.metrics import BUCKETS, COUNTERS, STAGES
from app.stages import WorkerState

if TYPE_CHECKING:
    from app.worker import Worker

HEALTHY = {"ready", "busy"}


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
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health",
                                        daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_health_server(worker: Worker, host: str, port: int) -> HealthServer:
    return HealthServer(worker, host, port).start()
