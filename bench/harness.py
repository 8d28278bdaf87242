"""The benchmark's harness: the fake job API that notes when things arrive, and worker processes.

``BenchServer`` is the fake platform (``fakeplatform``) in this process, noting for the current
run when the first take request, each result and each streamed chunk arrived (this process's
``perf_counter``). ``start``/``stop`` run one worker process (SIGTERM, then SIGKILL after a grace;
children left behind are killed); ``OtherWork`` says how much CPU other programs took during a
run (the machine may be shared); ``memory_of`` reads RSS and USS of a worker and its children.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from fakeplatform import FakeJobApiServer, Reply

API_KEY = "bench-job-api-key"
LONG_POLL_S = 1.0
STOP_GRACE_S = 30.0  # SIGTERM, then this long, then SIGKILL


# --- the server ------------------------------------------------------------------------------
class BenchServer(FakeJobApiServer):
    """The fake job API, also noting when the current run's takes, results and streamed chunks
    arrive (``chunk_times``: (job id, arrival) per accepted chunk, in order)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._mark = threading.Lock()
        self.connection_resets = 0
        report = self._httpd.handle_error

        def handle_error(request: Any, client_address: Any) -> None:
            # A worker that exits with a keep-alive connection open resets it: count that,
            # don't print a traceback for it (anything else is still printed).
            if isinstance(sys.exc_info()[1], ConnectionError):
                self.connection_resets += 1
            else:
                report(request, client_address)

        self._httpd.handle_error = handle_error  # type: ignore[method-assign]
        self.begin([])

    def begin(self, job_ids: Iterable[str]) -> None:
        """Start a run: forget the last run's times; ``all_done`` is set at its last result."""
        with self._mark:
            self.expected = len(list(job_ids))
            self._base = len(self.results)
            self.first_take: float | None = None
            self.first_job: float | None = None
            self.first_result: float | None = None
            self.last_result: float | None = None
            self.run_results = 0
            self.chunk_times: list[tuple[str, float]] = []
            self.all_done = threading.Event()

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        arrived = time.perf_counter()
        reply = super().handle(method, target, headers, body)
        if "/job-take" in target:
            with self._mark:
                if self.first_take is None:
                    self.first_take = arrived
                if reply.status == 200 and self.first_job is None:
                    self.first_job = time.perf_counter()
        elif method == "POST" and "/job-done/" in target and reply.status == 200:
            now = time.perf_counter()
            with self._mark:
                count = len(self.results) - self._base
                if count > self.run_results:
                    self.run_results = count
                    self.last_result = now
                    if self.first_result is None:
                        self.first_result = now
                    if count >= self.expected > 0:
                        self.all_done.set()
        elif method == "POST" and "/job-stream/" in target and reply.status == 200:
            now = time.perf_counter()
            job_id = urlsplit(target).path.rstrip("/").rpartition("/")[2]
            with self._mark:
                self.chunk_times.append((job_id, now))
        return reply


def check_one_packet(server: FakeJobApiServer, tries: int = 50) -> dict[str, Any]:
    """Does every answer arrive whole in the first ``recv`` (one write, no Nagle stall)?"""
    address = urlsplit(server.url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    whole, rtts = 0, []
    request = f"GET /stats HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    with socket.create_connection((str(host), int(port)), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(tries):
            started = time.perf_counter()
            sock.sendall(request)
            first = sock.recv(65536)
            rtts.append(time.perf_counter() - started)
            head, _, body = first.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            got = len(body)
            if got >= length and b"\r\n\r\n" in first:
                whole += 1
            deadline = time.monotonic() + 5
            while got < length and time.monotonic() < deadline:  # drain the rest, bounded
                more = sock.recv(65536)
                if not more:
                    break
                got += len(more)
    handler = getattr(server._httpd, "RequestHandlerClass", None)
    return {
        "answers_whole_in_first_recv": f"{whole}/{tries}",
        "one_packet": whole == tries,
        "tcp_nodelay": bool(getattr(handler, "disable_nagle_algorithm", False)),
        "rtt_ms_median": round(statistics.median(rtts) * 1000, 3),
        "rtt_ms_max": round(max(rtts) * 1000, 3),
    }


# --- processes -------------------------------------------------------------------------------
@dataclass
class Launch:
    """How to start one worker process."""

    worker: str  # "podworker", "runpod" or "floor"
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path


@dataclass
class Stopped:
    exit_code: int | None
    stop_s: float | None  # SIGTERM to exit
    killed: bool = False  # the worker outlived STOP_GRACE_S after SIGTERM: SIGKILLed
    log_tail: str = ""
    children_left: list[int] = field(default_factory=list)  # alive 5 s after it: SIGKILLed


def start(launch: Launch) -> tuple[subprocess.Popen[bytes], float]:
    log = launch.log.open("ab")
    started = time.perf_counter()
    proc = subprocess.Popen(
        launch.argv, env=launch.env, cwd=launch.cwd, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()
    return proc, started


def stop(proc: subprocess.Popen[bytes], launch: Launch) -> Stopped:
    """SIGTERM, wait up to ``STOP_GRACE_S``, then SIGKILL; children left behind are killed."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    stop_s: float | None = None
    killed = False
    if proc.poll() is None:
        sent = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
            stop_s = time.perf_counter() - sent
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            killed = True
    left = []
    for child in family:  # ours: started by the worker we started
        with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
            child.wait(5)
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.is_running():
                left.append(child.pid)
                child.kill()
                child.wait(5)
    return Stopped(proc.returncode, stop_s, killed, tail(launch.log), left)


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class OtherWork:
    """CPU time that neither this script nor the worker under test used, during one run: the
    machine is shared, and another program's load lowers every figure."""

    def __init__(self) -> None:
        self._busy0 = busy_cpu_seconds()
        self._own0 = sum(psutil.Process().cpu_times()[:2])
        self._started = time.perf_counter()

    def percent(self, worker_pid: int) -> float:
        """Other programs' share of the machine's CPUs so far (call before stopping the worker)."""
        worker = 0.0
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(worker_pid)
            for proc in (root, *root.children(recursive=True)):
                with contextlib.suppress(psutil.NoSuchProcess):
                    worker += sum(proc.cpu_times()[:4])  # with its reaped children
        own = sum(psutil.Process().cpu_times()[:2]) - self._own0
        other = busy_cpu_seconds() - self._busy0 - own - worker
        elapsed = (time.perf_counter() - self._started) * (os.cpu_count() or 1)
        return round(max(0.0, 100 * other / elapsed), 1) if elapsed > 0 else 0.0


def busy_cpu_seconds() -> float:
    """CPU seconds spent by processes (user, nice, system), all CPUs: interrupt and softirq
    time is left out, since the loopback traffic of the run itself lands there."""
    times = psutil.cpu_times()
    return float(times.user + getattr(times, "nice", 0.0) + times.system)


def memory_of(pid: int) -> dict[str, Any]:
    """RSS and USS of ``pid`` and every process under it, in MB."""
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    each = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            full = proc.memory_full_info()
            each.append({"pid": proc.pid, "name": " ".join(proc.cmdline()[:3])[-80:],
                         "rss_mb": round(full.rss / 2**20, 1),
                         "uss_mb": round(full.uss / 2**20, 1)})
    return {
        "processes": len(each),
        "rss_mb_total": round(sum(p["rss_mb"] for p in each), 1),
        "uss_mb_total": round(sum(p["uss_mb"] for p in each), 1),
        "rss_mb_largest": max((p["rss_mb"] for p in each), default=0.0),
        "each": each,
    }


