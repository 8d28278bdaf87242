"""The optional health port: ``/health`` (the worker's state) and ``/metrics`` (Prometheus).

It runs on its own daemon thread with its own HTTP server and only reads the worker's state
and counters, so a slow or stuck scraper never blocks the job loop. prometheus-client is
imported here, only when HEALTH_PORT is set.

``/health`` answers 200 while the worker is ``ready`` or ``busy`` and 503 while it is
``starting``, ``draining`` or ``stopped``, with ``{"state", "jobs_in_flight",
"undelivered_results", "seconds_since_last_job"}``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from app.metrics import BUCKETS, COUNTERS, STAGES

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
        for value in ("starting", "ready", "busy", "draining", "stopped"):
            state.add_metric([value], 1.0 if self._worker.snapshot.state.value == value else 0.0)
        yield state


def health_report(worker: Worker) -> tuple[int, dict[str, Any]]:
    snapshot = worker.snapshot
    state = snapshot.state.value
    body = {
        "state": state,
        "jobs_in_flight": len(snapshot.in_flight),
        "undelivered_results": snapshot.undelivered,
        "seconds_since_last_job": round(worker.clock.now() - snapshot.last_activity, 3),
    }
    return (200 if state in HEALTHY else 503), body


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
