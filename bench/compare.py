"""podworker beside RunPod's SDK worker (PyPI ``runpod``), against one fake job API, in one run.

    .venv/bin/python bench/compare.py            # the full run (about 2.5 minutes on 2 cores)
    .venv/bin/python bench/compare.py --quick    # smaller counts: a smoke check (under 1 minute)

What it does, in order:

1. creates (or reuses) ``bench/.venv-runpod`` and installs the latest ``runpod`` from PyPI there;
2. starts the fake job API (``fakeplatform``) in this process on 127.0.0.1 with
   a 1 s long-poll, and checks that each answer comes in one packet (else delayed ACKs add
   about 40 ms per answer and every figure below is wrong);
3. runs the scenarios, each worker in its own process, one after the other, on the same jobs and
   the same server, each stopped with SIGTERM once its results are in:

   - floor: ``bench/floor_client.py``, a bare take-and-post client on one keep-alive connection;
   - no-op: podworker (``MODEL=echo``) and the SDK (a handler returning its input) at
     concurrency 1, then the SDK at higher concurrencies (``concurrency_modifier``);
   - 200 ms model + 150 ms storage: podworker with ``MODEL=bench.models:sleepy`` and a storage
     that takes 150 ms (``bench.models.slow_storage``); the SDK handler waits 200 ms, then
     "uploads" for 150 ms on its own thread, as an SDK handler does;
   - start-up: from ``Popen`` to the server's first take request, no model;
   - idle memory: RSS (and USS) of the worker and all its children, after one job and 2 s idle;

4. prints a table and one JSON line, and writes the JSON to ``bench/results/latest.json``.

Throughput is jobs / (time of the run's last result at the server - time its first take request
arrived), all on this process's ``perf_counter``. The SDK at concurrency 1 does about one job a
second, so its no-op run is capped in time (20 s) and measured on the jobs it did. Both workers
run with their defaults otherwise (the SDK logs at DEBUG by default; podworker logs JSON at INFO).
``bench/profile_podworker.py`` shows where podworker's time goes (py-spy, per thread).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script, sys.path[0] is bench/
    sys.path.insert(0, str(REPO))

from bench import runpod_venv  # noqa: E402
from fakeplatform import FakeJobApiServer, Reply  # noqa: E402

BENCH = REPO / "bench"
RESULTS = BENCH / "results"
API_KEY = "bench-job-api-key"
LONG_POLL_S = 1.0
IDLE_S = 2.0  # how long a worker idles before its memory is read
STOP_GRACE_S = 30.0  # SIGTERM, then this long, then SIGKILL
MODEL_S, STORE_S = 0.200, 0.150
STORAGE_SPEC = "bench.models:slow_storage"

TARGETS = {  # from issue 7
    "noop_c1_jobs_per_s": (">=", 400.0),
    "sleepy_jobs_per_s": (">=", 4.5),
    "startup_s": ("<=", 0.5),
    "idle_rss_mb_one_process": ("<=", 50.0),
}

SDK_HANDLER = '''\
"""The runpod SDK side of bench/compare.py (written to a temporary folder at each run)."""
import os
import threading
import time

import runpod

MODE = os.environ["BENCH_HANDLER"]
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "1"))
MODEL_S = float(os.environ.get("BENCH_MODEL_S", "0.2"))
STORE_S = float(os.environ.get("BENCH_STORE_S", "0.15"))
OUTPUT_DIR = os.environ.get("BENCH_OUTPUT_DIR", ".")
PNG = bytes.fromhex(os.environ.get("BENCH_PNG_HEX", "00"))
_pause = threading.Event()  # never set: wait() sleeps


def noop(job):
    return job["input"]


def sleepy(job):
    _pause.wait(MODEL_S)  # the model
    started = time.monotonic()  # then the upload, on the handler's thread
    folder = os.path.join(OUTPUT_DIR, job["id"])
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "0.png")
    with open(path, "wb") as handle:
        handle.write(PNG)
    _pause.wait(max(0.0, STORE_S - (time.monotonic() - started)))
    return {"image": path, "i": job["input"].get("i")}


config = {"handler": sleepy if MODE == "sleepy" else noop}
if CONCURRENCY != 1:
    config["concurrency_modifier"] = lambda current: CONCURRENCY
runpod.serverless.start(config)
'''


# --- the server ------------------------------------------------------------------------------
class BenchServer(FakeJobApiServer):
    """The fake job API, also noting when the current run's takes and results arrive."""

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


# --- the two workers -------------------------------------------------------------------------
class Workers:
    """Builds the launch of each worker for a scenario."""

    def __init__(self, server: FakeJobApiServer, tmp: Path, runpod_python: Path) -> None:
        self.server = server
        self.tmp = tmp
        self.runpod_python = runpod_python
        self.handler = tmp / "sdk_handler.py"
        self.handler.write_text(SDK_HANDLER)
        self._n = 0

    def _dirs(self, tag: str) -> tuple[Path, Path, Path]:
        self._n += 1
        run = self.tmp / f"{self._n:02d}-{tag}"
        home = run / "home"
        home.mkdir(parents=True)
        return run, home, run / "log.txt"

    def _base_env(self, home: Path) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                "LANG": "C.UTF-8", "TMPDIR": str(home)}

    def podworker(self, tag: str, model: str = "echo", storage: str | None = None) -> Launch:
        run, home, log = self._dirs(tag)
        env = self._base_env(home) | {
            "WEBHOOK_GET_WORK": self.server.take_url,
            "WEBHOOK_POST_OUTPUT": self.server.result_url,
            "WEBHOOK_PING": self.server.ping_url,
            "AI_API_KEY": API_KEY,
            "RUNPOD_POD_ID": tag,
            "MODEL": model,
            "STATE_DIR": str(run / "state"),
            "OUTPUT_DIR": str(run / "outputs"),
            "TERMINATE_IDLE_TIME": "0",
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(REPO),
        }
        argv = [sys.executable, "-m", "app", "--env-file", str(run / "absent.env"), "run"]
        if storage is not None:
            env["STORAGE"] = storage
        return Launch("podworker", argv, env, REPO, log)

    def runpod(self, tag: str, handler: str = "noop", concurrency: int = 1) -> Launch:
        run, home, log = self._dirs(tag)
        env = self._base_env(home) | {
            "RUNPOD_WEBHOOK_GET_JOB": self.server.take_url,
            "RUNPOD_WEBHOOK_POST_OUTPUT": self.server.result_url,
            "RUNPOD_WEBHOOK_PING": self.server.ping_url,
            "RUNPOD_AI_API_KEY": API_KEY,
            "RUNPOD_POD_ID": tag,
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "BENCH_HANDLER": handler,
            "BENCH_CONCURRENCY": str(concurrency),
            "BENCH_MODEL_S": str(MODEL_S),
            "BENCH_STORE_S": str(STORE_S),
            "BENCH_OUTPUT_DIR": str(run / "outputs"),
            "BENCH_PNG_HEX": tiny_png().hex(),
        }
        return Launch("runpod", [str(self.runpod_python), str(self.handler)], env, run, log)

    def floor(self, tag: str, count: int, seconds: float) -> Launch:
        run, home, log = self._dirs(tag)
        argv = [sys.executable, str(BENCH / "floor_client.py"), self.server.take_url,
                self.server.result_url, str(count), "--key", API_KEY, "--seconds", str(seconds)]
        return Launch("floor", argv, self._base_env(home), run, log)


def tiny_png() -> bytes:
    from adapters.echo_model import TINY_PNG

    return TINY_PNG


# --- scenarios -------------------------------------------------------------------------------
def output_ok(expect: str, i: int, result: Mapping[str, Any]) -> bool:
    """Is job ``i``'s result right? ``echo``: its input back; ``image``: a stored reference."""
    output = result.get("output")
    if result.get("error") is not None or not isinstance(output, dict):
        return False
    if expect == "image":
        return isinstance(output.get("image"), str) and output.get("i") == i
    return output == {"i": i}


def run_jobs(server: BenchServer, launch: Launch, tag: str, count: int, cap_s: float,
             expect: str = "echo") -> dict[str, Any]:
    """Queue ``count`` jobs, start the worker, wait for every result (at most ``cap_s`` from
    start), stop it, and measure."""
    ids = [f"{tag}-{i}" for i in range(count)]
    for i, job_id in enumerate(ids):
        server.submit({"i": i}, job_id)
    server.begin(ids)
    other = OtherWork()
    proc, started = start(launch)
    deadline = started + cap_s
    while (left := deadline - time.perf_counter()) > 0:  # bounded by cap_s
        if server.all_done.wait(min(0.5, left)) or proc.poll() is not None:
            break
    capped = not server.all_done.is_set()
    other_percent = other.percent(proc.pid)
    stopped = stop(proc, launch)
    done = server.run_results
    window = (server.last_result or 0) - (server.first_take or 0)
    between = (server.last_result or 0) - (server.first_result or 0)  # no fill, no drain
    results = [server.results[i] for i in ids if i in server.results]
    for job_id in ids:  # a capped run leaves jobs queued: drop them before the next run
        if job_id not in server.results:
            server.cancel(job_id)
    figure = {
        "worker": launch.worker,
        "jobs": count,
        "done": done,
        "capped_after_s": round(cap_s, 1) if capped else None,
        "jobs_per_s": round(done / window, 2) if done and window > 0 else 0.0,
        "window_s": round(window, 3),
        "steady_jobs_per_s": round((done - 1) / between, 2) if done > 1 and between > 0 else None,
        "startup_s": round(server.first_take - started, 3) if server.first_take else None,
        "errors": sum(1 for r in results if r.get("error") is not None),
        "wrong_outputs": sum(1 for n, job_id in enumerate(ids) if job_id in server.results
                             and not output_ok(expect, n, server.results[job_id])),
        "duplicates": len({d for d in server.duplicates if d in set(ids)}),
        "exit_code": stopped.exit_code,
        "stop_s": round(stopped.stop_s, 3) if stopped.stop_s is not None else None,
        "killed": stopped.killed,
        "children_left": stopped.children_left,
        "other_programs_cpu_percent": other_percent,
        "log": str(launch.log),
    }
    if (capped and launch.worker != "runpod") or figure["errors"] or figure["wrong_outputs"] \
            or stopped.killed:
        figure["log_tail"] = stopped.log_tail
    return figure


def repeated(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one scenario: the median figures, and every run."""
    return {
        "jobs_per_s": median_of(runs, lambda r: r["jobs_per_s"]),
        "steady_jobs_per_s": median_of(runs, lambda r: r["steady_jobs_per_s"]),
        "all_jobs_per_s": [r["jobs_per_s"] for r in runs],
        "other_programs_cpu_percent": max(r["other_programs_cpu_percent"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "wrong_outputs": sum(r["wrong_outputs"] for r in runs),
        "duplicates": sum(r["duplicates"] for r in runs),
        "runs": runs,
    }


def startup_and_memory(server: BenchServer, launch: Launch, tag: str) -> dict[str, Any]:
    """Start with one job queued: Popen -> first take; after the job and ``IDLE_S`` idle, the
    memory of every process of the worker; then SIGTERM -> exit."""
    ids = [f"{tag}-0"]
    server.submit({"i": 0}, ids[0])
    server.begin(ids)
    proc, started = start(launch)
    server.all_done.wait(60)
    first_take = server.first_take
    first_result = server.last_result
    memory: dict[str, Any] = {}
    if proc.poll() is None and server.all_done.is_set():
        threading.Event().wait(IDLE_S)
        with contextlib.suppress(psutil.NoSuchProcess):
            memory = memory_of(proc.pid)
    stopped = stop(proc, launch)
    if ids[0] not in server.results:
        server.cancel(ids[0])
    return {
        "worker": launch.worker,
        "startup_s": round(first_take - started, 3) if first_take else None,
        "first_result_s": round(first_result - started, 3) if first_result else None,
        "memory": memory,
        "exit_code": stopped.exit_code,
        "stop_s": round(stopped.stop_s, 3) if stopped.stop_s is not None else None,
        "killed": stopped.killed,
        **({"log_tail": stopped.log_tail} if not memory or stopped.killed else {}),
    }


# --- the runpod virtual environment ----------------------------------------------------------
def ensure_runpod_venv() -> tuple[Path, str, str]:
    """``bench/.venv-runpod`` with the latest ``runpod`` from PyPI; (python, runpod version,
    python version)."""
    try:
        venv = runpod_venv.ensure_runpod_venv("runpod", say=lambda s: print(s, flush=True))
    except runpod_venv.RunpodVenvError as exc:
        raise SystemExit(f"bench: {exc}") from None
    print(f"runpod {venv.runpod_version} (Python {venv.python_version})", flush=True)
    return venv.python, venv.runpod_version, venv.python_version


# --- machine, table, JSON --------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True, timeout=30).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True, timeout=30).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit + ("+dirty" if dirty else ""),
    }


def machine_busy() -> dict[str, Any]:
    """How busy the machine is while this script is idle: other work skews every figure."""
    return {"cpu_percent_1s": psutil.cpu_percent(interval=1.0),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def target_met(name: str, value: float | None) -> bool | None:
    if value is None:
        return None
    op, limit = TARGETS[name]
    return value >= limit if op == ">=" else value <= limit


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    else:
        text = str(value)
    return text + unit


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def median_of(runs: list[dict[str, Any]], get: Callable[[dict[str, Any]], Any]) -> float | None:
    values = [v for v in (get(r) for r in runs) if v is not None]
    return round(statistics.median(values), 3) if values else None


# --- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="podworker vs the runpod SDK worker")
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke check")
    parser.add_argument("--sdk-concurrency", default=None,
                        help="the SDK's higher concurrencies, comma-separated (default 32,512)")
    args = parser.parse_args(argv)
    q = args.quick
    n_floor = 300 if q else 2000
    n_noop = 100 if q else 500
    n_sleepy = 10 if q else 50
    sdk_c1_seconds = 6.0 if q else 20.0
    repeats = 1 if q else 3
    concurrencies = [int(c) for c in (args.sdk_concurrency or ("32" if q else "32,512"))
                     .split(",") if c.strip()]

    runpod_python, runpod_version, runpod_python_version = ensure_runpod_venv()
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"machine": machine(), "runpod_version": runpod_version,
                               "runpod_python": runpod_python_version, "quick": q,
                               "machine_busy_before": machine_busy()}
    print(f"machine: {figures['machine']['cpu']}, {figures['machine']['cores']} cores, "
          f"Python {figures['machine']['python']}", flush=True)

    with tempfile.TemporaryDirectory(prefix="podworker-bench-") as tmp_name, \
            BenchServer(host="127.0.0.1", port=0, long_poll_s=LONG_POLL_S,
                        api_key=API_KEY) as server:
        tmp = Path(tmp_name)
        workers = Workers(server, tmp, runpod_python)
        figures["server"] = {"url": server.url, "long_poll_s": LONG_POLL_S,
                             **check_one_packet(server)}
        s = figures["server"]
        print(f"fake job API {server.url}: {s['answers_whole_in_first_recv']} answers whole in "
              f"one packet, TCP_NODELAY {s['tcp_nodelay']}, round trip {s['rtt_ms_median']} ms",
              flush=True)
        if not s["one_packet"] or not s["tcp_nodelay"] or s["rtt_ms_median"] > 10:
            print("WARNING: the fake job API does not answer in one packet with TCP_NODELAY: "
                  "delayed ACKs distort every figure below", flush=True)
        figures["storage_via"] = "python -m app run, STORAGE=" + STORAGE_SPEC

        def step(title: str) -> None:
            print(f"... {title}", flush=True)

        step(f"floor: bare client, {n_floor} jobs, {repeats} runs")
        figures["floor"] = repeated([
            run_jobs(server, workers.floor(f"floor{n}", n_floor, 120), f"floor{n}", n_floor, 150)
            for n in range(repeats)])
        step(f"no-op, concurrency 1, {n_noop} jobs: podworker, {repeats} runs")
        figures["noop_podworker"] = repeated([
            run_jobs(server, workers.podworker(f"pw-noop{n}"), f"pw-noop{n}", n_noop, 120)
            for n in range(repeats)])
        step(f"no-op, concurrency 1: runpod SDK (capped at {sdk_c1_seconds:g} s)")
        figures["noop_runpod_c1"] = run_jobs(server, workers.runpod("rp-noop-c1"), "rp-noop-c1",
                                             n_noop, sdk_c1_seconds)
        for c in concurrencies:
            step(f"no-op, {n_noop} jobs: runpod SDK at concurrency {c}")
            tag = f"rp-noop-c{c}"
            figures[f"noop_runpod_c{c}"] = run_jobs(
                server, workers.runpod(tag, concurrency=c), tag, n_noop, 60 + n_noop / 5)
        step(f"200 ms model + 150 ms storage, {n_sleepy} jobs: podworker")
        figures["sleepy_podworker"] = run_jobs(
            server, workers.podworker("pw-sleepy", "bench.models:sleepy", STORAGE_SPEC),
            "pw-sleepy", n_sleepy, 30 + n_sleepy * 0.5, expect="image")
        step(f"200 ms model + 150 ms storage, {n_sleepy} jobs: runpod SDK")
        figures["sleepy_runpod"] = run_jobs(server, workers.runpod("rp-sleepy", "sleepy"),
                                            "rp-sleepy", n_sleepy, 30 + n_sleepy * 2,
                                            expect="image")
        startups: dict[str, list[dict[str, Any]]] = {"podworker": [], "runpod": []}
        for n in range(repeats):
            step(f"start-up and idle memory, round {n + 1} of {repeats}")
            startups["podworker"].append(
                startup_and_memory(server, workers.podworker(f"pw-start{n}"), f"pw-start{n}"))
            startups["runpod"].append(
                startup_and_memory(server, workers.runpod(f"rp-start{n}"), f"rp-start{n}"))
        figures["startup"] = startups
        figures["server"]["stats"] = server.stats()
        figures["server"]["connection_resets"] = server.connection_resets
    figures["machine_busy_after"] = machine_busy()

    summary = summarise(figures, concurrencies)
    figures["summary"] = summary
    print()
    print(render(figures, summary, concurrencies))
    problems = [f"{k}: {v.get('errors')} errors, {v.get('wrong_outputs')} wrong outputs, "
                f"{v.get('duplicates')} duplicates"
                for k, v in figures.items() if isinstance(v, dict)
                and (v.get("errors") or v.get("wrong_outputs") or v.get("duplicates"))]
    for problem in problems:
        print("WARNING:", problem)
    line = json.dumps(figures, separators=(",", ":"))
    (RESULTS / "latest.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(line)
    print(f"(written to {(RESULTS / 'latest.json').relative_to(REPO)})")
    return 1 if problems else 0


def summarise(f: dict[str, Any], concurrencies: list[int]) -> dict[str, Any]:
    pw, rp = f["startup"]["podworker"], f["startup"]["runpod"]
    s: dict[str, Any] = {
        "floor_jobs_per_s": f["floor"]["jobs_per_s"],
        "noop_c1_jobs_per_s": {"podworker": f["noop_podworker"]["jobs_per_s"],
                               "runpod": f["noop_runpod_c1"]["jobs_per_s"]},
        "sleepy_jobs_per_s": {"podworker": f["sleepy_podworker"]["jobs_per_s"],
                              "runpod": f["sleepy_runpod"]["jobs_per_s"],
                              "ideal": round(1 / MODEL_S, 2)},
        "sleepy_steady_jobs_per_s": {"podworker": f["sleepy_podworker"]["steady_jobs_per_s"],
                                     "runpod": f["sleepy_runpod"]["steady_jobs_per_s"]},
        "startup_s": {"podworker": median_of(pw, lambda r: r["startup_s"]),
                      "runpod": median_of(rp, lambda r: r["startup_s"])},
        "idle_rss_mb_total": {
            "podworker": median_of(pw, lambda r: r["memory"].get("rss_mb_total")),
            "runpod": median_of(rp, lambda r: r["memory"].get("rss_mb_total"))},
        "idle_rss_mb_one_process": {
            "podworker": median_of(pw, lambda r: r["memory"].get("rss_mb_largest")),
            "runpod": median_of(rp, lambda r: r["memory"].get("rss_mb_largest"))},
        "idle_uss_mb_total": {
            "podworker": median_of(pw, lambda r: r["memory"].get("uss_mb_total")),
            "runpod": median_of(rp, lambda r: r["memory"].get("uss_mb_total"))},
        "processes": {"podworker": median_of(pw, lambda r: r["memory"].get("processes")),
                      "runpod": median_of(rp, lambda r: r["memory"].get("processes"))},
        "stop_s": {"podworker": median_of(pw, lambda r: r["stop_s"]),
                   "runpod": median_of(rp, lambda r: r["stop_s"])},
    }
    for c in concurrencies:
        s[f"noop_runpod_c{c}_jobs_per_s"] = f[f"noop_runpod_c{c}"]["jobs_per_s"]
    s["targets"] = {}
    for name, (op, limit) in TARGETS.items():
        value = s[name]["podworker"]
        s["targets"][name] = {"target": f"{op} {limit:g}", "podworker": value,
                              "met": target_met(name, value)}
    return s


def render(f: dict[str, Any], s: dict[str, Any], concurrencies: list[int]) -> str:
    floor = s["floor_jobs_per_s"]
    met = {name: t["met"] for name, t in s["targets"].items()}

    def mark(name: str) -> str:
        return {True: "met", False: "MISSED", None: "?"}[met[name]]

    pw_noop = s["noop_c1_jobs_per_s"]["podworker"]
    rp1 = f["noop_runpod_c1"]
    rp1_note = f" ({rp1['done']} jobs in {rp1['capped_after_s']:g} s)" if rp1.get(
        "capped_after_s") else ""
    rows = [["scenario", "podworker", "runpod SDK", "podworker/runpod", "share of floor",
             "target (podworker)"]]
    rows.append(["floor: bare take+post client, jobs/s", fmt(floor), "", "", "100%", ""])
    rows.append(["no-op, concurrency 1, jobs/s", fmt(pw_noop),
                 fmt(s["noop_c1_jobs_per_s"]["runpod"]) + rp1_note,
                 fmt(ratio(pw_noop, s["noop_c1_jobs_per_s"]["runpod"]), "x"),
                 fmt(round(100 * pw_noop / floor) if floor else None, "%"),
                 f">= 400: {mark('noop_c1_jobs_per_s')}"])
    for c in concurrencies:
        value = s[f"noop_runpod_c{c}_jobs_per_s"]
        rows.append([f"no-op, SDK at concurrency {c}, jobs/s", f"({fmt(pw_noop)} at c=1)",
                     fmt(value), fmt(ratio(pw_noop, value), "x"),
                     "", ""])
    sl = s["sleepy_jobs_per_s"]
    rows.append(["200 ms model + 150 ms storage, jobs/s", fmt(sl["podworker"]),
                 fmt(sl["runpod"]), fmt(ratio(sl["podworker"], sl["runpod"]), "x"),
                 fmt(round(100 * sl["podworker"] / sl["ideal"]) if sl["podworker"] else None,
                     "% of ideal 5.0"),
                 f">= 4.5: {mark('sleepy_jobs_per_s')}"])
    st = s["startup_s"]
    rows.append(["start-up to first take, s (median)", fmt(st["podworker"]), fmt(st["runpod"]),
                 fmt(ratio(st["podworker"], st["runpod"]), "x"), "",
                 f"<= 0.5: {mark('startup_s')}"])
    for key, label in (("idle_rss_mb_one_process", "idle RSS, largest process, MB"),
                       ("idle_rss_mb_total", "idle RSS, all processes, MB"),
                       ("idle_uss_mb_total", "idle USS, all processes, MB"),
                       ("processes", "processes"),
                       ("stop_s", "SIGTERM to exit when idle, s")):
        v = s[key]
        rows.append([label, fmt(v["podworker"]), fmt(v["runpod"]),
                     fmt(ratio(v["podworker"], v["runpod"]), "x"), "",
                     f"<= 50: {mark(key)}" if key in TARGETS else ""])
    m = f["machine"]
    head = (f"podworker vs runpod {f['runpod_version']} | {m['cpu']}, {m['cores']} cores, "
            f"Python {m['python']} | fake job API long-poll {LONG_POLL_S:g} s, "
            f"one packet: {f['server']['one_packet']} | CPU busy before/after "
            f"{f['machine_busy_before']['cpu_percent_1s']:g}%/"
            f"{f['machine_busy_after']['cpu_percent_1s']:g}%")
    notes = [
        "jobs/s = jobs / (last result - first take request), at the server; podworker no-op "
        f"and floor: median of {len(f['floor']['runs'])} runs "
        f"(podworker runs: {f['noop_podworker']['all_jobs_per_s']})",
        f"storage step in podworker: {f['storage_via']}",
    ]
    busy = max(f["machine_busy_before"]["cpu_percent_1s"],
               f["machine_busy_after"]["cpu_percent_1s"])
    if busy > 20:
        notes.append(f"WARNING: other work used {busy:g}% of the CPUs before or after the run: "
                     "figures are lower than on a quiet machine")
    disturbed = {k: v["other_programs_cpu_percent"] for k, v in f.items()
                 if isinstance(v, dict) and v.get("other_programs_cpu_percent", 0) > 10}
    if disturbed:
        notes.append("WARNING: other programs used the CPUs during "
                     + ", ".join(f"{k} ({v:g}%)" for k, v in disturbed.items())
                     + ": those figures are lower than on a quiet machine")
    return head + "\n" + table(rows) + "\n" + "\n".join(notes)


if __name__ == "__main__":
    sys.exit(main())
