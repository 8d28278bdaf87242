"""A rig for the fault suite and the security tests: the real worker process on loopback.

``rig`` (a fixture) gives each test a fake job API (with job-API and RunPod keys), a folder,
a health port for ``/metrics``, and ``start()`` to launch ``python -m app run`` processes that
are all killed when the test ends. The rig remembers every job submitted through it, so
``assert_delivered_once()`` can check the two promises every fault test makes: every result
arrived, none arrived twice. ``stop_api()``/``start_api()`` take the job API away (connection
refused) and bring it back on the same port, still knowing the jobs it handed out (RunPod's
platform does not forget a job because one of its front ends restarted).

Waits poll with a deadline (``poll_until``); a poll interval of 50 ms keeps the polling from
competing with the worker for this machine's two cores. ``RecordingServer`` stands in for a
bucket or any HTTP service (over TLS too) and records what reached it.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest
import requests

from adapters.outbox.journal import peek, read_journal
from domain.job import JobResult
from fakeplatform import FakeJobApiServer
from tests.support.ports import free_port
from tests.support.replay_server import Captured
from tests.support.worker_process import JOB_API_KEY, RUNPOD_KEY, WorkerProcess, worker_env

LONG_POLL_S = 0.3
POD_ID = "e2e-pod"  # what worker_env sets as RUNPOD_POD_ID


def poll_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> float:
    """Poll ``condition`` until true and return the monotonic time it was seen true; fail the
    test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        threading.Event().wait(interval)  # the poll interval, not a wait for an event


def read_metric(port: int, name: str) -> float:
    """One counter or gauge from the worker's ``/metrics`` (``podworker_<name>``)."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    wanted = (f"podworker_{name} ", f"podworker_{name}_total ")
    for line in text.splitlines():
        if line.startswith(wanted):
            return float(line.split()[1])
    raise AssertionError(f"no metric podworker_{name} in /metrics")


def s3_settings(endpoint_url: str, bucket: str, access_key_id: str, secret: str) -> dict[str, str]:
    return {
        "STORAGE": "s3",
        "BUCKET_ENDPOINT_URL": endpoint_url,
        "BUCKET_NAME": bucket,
        "BUCKET_ACCESS_KEY_ID": access_key_id,
        "BUCKET_SECRET_ACCESS_KEY": secret,
        "BUCKET_REGION": "us-east-1",
    }


class RecordingServer:
    """Answers every request (GET, HEAD, PUT, POST, DELETE) with an empty 200 and records it in
    ``captured``: a stand-in bucket that shows what reached it, over TLS when given a context."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.captured: list[Captured] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
        self._httpd.daemon_threads = True
        self._httpd.recorder = self  # type: ignore[attr-defined]
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self._scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> RecordingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def record(self, request: Captured) -> None:
        with self._lock:
            self.captured.append(request)


class _RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        recorder = cast(Any, self.server).recorder
        recorder.record(Captured(self.command, self.path, headers, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@dataclass
class Rig:
    """One test's fake job API, folder, health port and worker processes."""

    root: Path
    api: FakeJobApiServer
    api_key: str = JOB_API_KEY  # what the fake requires, and what workers are given
    pod_api_key: str = RUNPOD_KEY  # what the fake's GraphQL endpoint requires
    health_port: int = field(default_factory=free_port)
    workers: list[WorkerProcess] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.monotonic)

    @property
    def state(self) -> Path:
        return self.root / "state"

    def env(self, **extra: str) -> dict[str, str]:
        settings = {
            "HEALTH_PORT": str(self.health_port),
            "HEALTH_HOST": "127.0.0.1",
            "RUNPOD_PING_INTERVAL": "2000",
            "EXECUTION_TIMEOUT": "60000",
            "RUNPOD_AI_API_KEY": self.api_key,
        }
        settings.update(extra)
        return worker_env(self.api, self.state, runpod_names=True, **settings)

    def start(self, name: str = "worker", **extra: str) -> WorkerProcess:
        """Launch ``python -m app run`` with the rig's settings plus ``extra``."""
        worker = WorkerProcess(self.env(**extra), self.root, name=f"{name}-{len(self.workers)}")
        self.workers.append(worker)
        return worker

    def submit(self, job_input: Any) -> str:
        job_id = self.api.submit(job_input)
        self.submitted.append(job_id)
        return job_id

    def metric(self, name: str) -> float:
        return read_metric(self.health_port, name)

    def wait_taken(self, job_id: str, timeout: float = 30.0) -> None:
        assert self.api.wait_until(lambda s: job_id in s.taken, timeout), f"{job_id} not taken"

    def wait_result(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        arrived = self.api.wait_until(lambda s: job_id in s.results, timeout)
        assert arrived, f"no result for {job_id}"
        return self.api.results[job_id]

    # --- the job API going away and coming back -----------------------------------------
    def stop_api(self) -> None:
        """Stop the fake: from now on every connection to its port is refused."""
        self.api.stop()

    def start_api(self) -> FakeJobApiServer:
        """Serve again on the same port, knowing the jobs handed out before the outage."""
        old = self.api
        assert old.stats()["queued"] == 0, "jobs still queued would be forgotten"
        host, port = old.address
        new = FakeJobApiServer(host, port, long_poll_s=old.long_poll_s, api_key=self.api_key,
                               pod_api_key=self.pod_api_key)
        new.jobs.update(old.jobs)
        new.results.update(old.results)
        new.taken.extend(old.taken)
        new.duplicates.extend(old.duplicates)
        self.api = new.start()
        return new

    # --- the promises ------------------------------------------------------------------
    def kept_results(self) -> list[JobResult]:
        """The results waiting in the outbox journal (read without its lock)."""
        return peek(self.state / "outbox")

    def running_marks(self) -> list[str]:
        """Jobs the outbox journal says were on the model when the worker stopped."""
        return list(read_journal(self.state / "outbox").running)

    def assert_delivered_once(self, *job_ids: str) -> None:
        """Each job (all submitted ones by default) has exactly one final result; none twice;
        no progress after a result; the outbox holds nothing."""
        for job_id in job_ids or tuple(self.submitted):
            assert job_id in self.api.results, f"the result of {job_id} was lost"
        assert self.api.duplicates == [], f"delivered twice: {self.api.duplicates}"
        assert self.api.late_progress == []
        assert self.kept_results() == [], "a result is still waiting in the outbox"
        assert self.running_marks() == []

    def assert_polite(self) -> None:
        """The worker never spun on the job API: takes stayed within one per long poll (the
        fake holds each empty take ``LONG_POLL_S``) plus two per job, since the rig began."""
        elapsed = time.monotonic() - self.created
        takes = self.api.requests["take"]
        bound = elapsed / LONG_POLL_S + 2 * len(self.submitted) + 5
        assert takes <= bound, f"{takes} takes in {elapsed:.1f} s (at most {bound:.0f} expected)"

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.api.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    api = FakeJobApiServer(long_poll_s=LONG_POLL_S, api_key=JOB_API_KEY,
                           pod_api_key=RUNPOD_KEY).start()
    made = Rig(root=tmp_path, api=api)
    try:
        yield made
    finally:
        made.close()
