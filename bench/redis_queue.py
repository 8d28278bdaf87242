"""No-op jobs through a Redis queue (``JOB_QUEUE``), beside the same worker on RunPod's protocol.

    .venv/bin/python -m bench.redis_queue     # concurrency 1 and 64: through Redis (appendfsync
                                              # always, and everysec) and through the RunPod
                                              # fake, in turns, 3 rounds (a few minutes)
    .venv/bin/python -m bench.redis_queue --jobs 300 --repeats 1 --fsync everysec

``make bench`` (``bench/compare.py``) runs ``measure`` after its own no-op runs and prints the
figures beside the RunPod path's. What one run does: start a ``redis-server`` of its own on a
free port (append-only file synced on every write, ``appendfsync always``: the manifest's
setting; ``--fsync everysec`` or ``off`` to compare), queue the jobs with the client
(``streamqueue``), start ``python -m app run`` with ``MODEL=echo`` and ``CONCURRENCY``, wait for
every result, stop it with SIGTERM, and check that every job was announced once with its own
output. jobs/s = jobs / (the last job's finish - the first job's start), both read from the
job records (Redis's clock): the same window as the RunPod run's (first take to last result).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script, sys.path[0] is bench/
    sys.path.insert(0, str(REPO))

from bench.harness import Launch, start, stop  # noqa: E402
from streamqueue import layout  # noqa: E402
from streamqueue.client import JobQueue  # noqa: E402

CONCURRENCIES = (1, 64)


@contextlib.contextmanager
def redis_server(folder: Path, fsync: str = "always") -> Iterator[str]:
    """A ``redis-server`` on a free loopback port for the run; its URL."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    persistence = (["--appendonly", "no"] if fsync == "off"
                   else ["--appendonly", "yes", "--appendfsync", fsync])
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--dir", str(folder), *persistence], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        probe = JobQueue.from_url(url, "probe")
        deadline = time.monotonic() + 20
        while True:
            try:
                probe.health()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                threading.Event().wait(0.02)
        probe.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def launch(url: str, queue: str, tag: str, concurrency: int, tmp: Path) -> Launch:
    run = tmp / tag
    home = run / "home"
    home.mkdir(parents=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "LANG": "C.UTF-8", "TMPDIR": str(home), "PYTHONPATH": str(REPO),
           "JOB_QUEUE": url, "JOB_QUEUE_NAME": queue, "RUNPOD_POD_ID": tag, "MODEL": "echo",
           "CONCURRENCY": str(concurrency), "STATE_DIR": str(run / "state"),
           "OUTPUT_DIR": str(run / "outputs"), "TERMINATE_IDLE_TIME": "0", "LOG_FORMAT": "json"}
    argv = [sys.executable, "-m", "app", "--env-file", str(run / "absent.env"), "run"]
    return Launch("podworker", argv, env, REPO, run / "log.txt")


def run_jobs(url: str, tmp: Path, count: int, concurrency: int, cap_s: float = 300
             ) -> dict[str, Any]:
    """One run: ``count`` no-op jobs queued, one worker at ``concurrency``; its figures."""
    tag = f"redis-c{concurrency}-{int(time.time() * 1000) % 10**8}"
    queue = JobQueue.from_url(url, tag, result_ttl_s=3600)
    ids = [f"{tag}-{i}" for i in range(count)]
    queue.submit_many([(job_id, {"i": i}) for i, job_id in enumerate(ids)])
    how = launch(url, tag, tag, concurrency, tmp)
    proc, _started = start(how)
    try:
        states = queue.wait_all(ids, timeout_s=cap_s)
    finally:
        stopped = stop(proc, how)
    client = queue._redis
    announced = Counter(fields[b"id"].decode()
                        for _id, fields in client.xrange(queue.layout.results))
    first = min(s.started_ms or 0 for s in states.values())
    last = max(s.finished_ms or 0 for s in states.values())
    window = (last - first) / 1000
    wrong = sum(1 for i, job_id in enumerate(ids)
                if states[job_id].status != layout.COMPLETED or states[job_id].output != {"i": i})
    twice = sum(1 for n in announced.values() if n > 1)
    missing = count - len(announced)
    queue.close()
    return {
        "worker": "podworker-redis", "jobs": count, "concurrency": concurrency,
        "jobs_per_s": round(count / window, 2) if window > 0 else None,
        "window_s": round(window, 3), "wrong_outputs": wrong, "duplicates": twice,
        "missing": missing, "delivered_once": not (wrong or twice or missing),
        "exit_code": stopped.exit_code, "log": str(how.log),
    }


def measure(count: int, repeats: int = 1, fsync: str = "always",
            concurrencies: tuple[int, ...] = CONCURRENCIES) -> dict[str, Any]:
    """The figures ``make bench`` reports: no-op jobs/s through Redis at each concurrency
    (median of ``repeats`` runs), and whether every job was delivered once."""
    figures: dict[str, Any] = {"fsync": fsync, "jobs": count}
    with tempfile.TemporaryDirectory(prefix="podworker-redis-bench-") as name, \
            redis_server(Path(name), fsync) as url:
        version = JobQueue.from_url(url, "probe")._redis.info("server")["redis_version"]
        figures["redis_version"] = version
        for c in concurrencies:
            runs = [run_jobs(url, Path(name), count, c) for _ in range(repeats)]
            speeds = sorted(r["jobs_per_s"] or 0.0 for r in runs)
            figures[f"c{c}"] = {"jobs_per_s": speeds[len(speeds) // 2],
                                "all_jobs_per_s": [r["jobs_per_s"] for r in runs],
                                "delivered_once": all(r["delivered_once"] for r in runs),
                                "runs": runs}
    figures["delivered_once"] = all(figures[f"c{c}"]["delivered_once"] for c in concurrencies)
    return figures


def side_by_side(count: int, repeats: int, fsyncs: tuple[str, ...]) -> dict[str, Any]:
    """Rounds in turns on the same machine: at each concurrency, one run through each Redis
    (one per fsync policy), then one through the RunPod fake (``fakeplatform``): a change of
    load lands on all of them. Medians per column."""
    from bench.harness import API_KEY, LONG_POLL_S, BenchServer
    from bench.scenarios import run_jobs as runpod_jobs
    from bench.workers import Workers

    runs: dict[str, list[dict[str, Any]]] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="podworker-bench-")))
        urls = {}
        for fsync in fsyncs:
            (tmp / fsync).mkdir()
            urls[fsync] = stack.enter_context(redis_server(tmp / fsync, fsync))
        server = stack.enter_context(BenchServer(host="127.0.0.1", port=0,
                                                 long_poll_s=LONG_POLL_S, api_key=API_KEY))
        workers = Workers(server, tmp, Path(sys.executable))
        for k in range(repeats):
            for c in CONCURRENCIES:
                for fsync, url in urls.items():
                    runs.setdefault(f"redis_{fsync}_c{c}", []).append(
                        run_jobs(url, tmp, count, c))
                tag = f"pw-noop-c{c}-{k}"
                runs.setdefault(f"runpod_c{c}", []).append(
                    runpod_jobs(server, workers.podworker(tag, concurrency=c), tag, count, 120))
    return {key: {"jobs_per_s": sorted(r["jobs_per_s"] or 0.0 for r in rs)[len(rs) // 2],
                  "all_jobs_per_s": [r["jobs_per_s"] for r in rs],
                  "delivered_once": all(r["delivered_once"] for r in rs)}
            for key, rs in runs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="no-op jobs/s through a Redis queue, beside "
                                     "the RunPod fake's")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fsync", default="always,everysec",
                        help="Redis's appendfsync policies to run, comma-separated "
                        "(always, everysec, off)")
    args = parser.parse_args(argv)
    fsyncs = tuple(f.strip() for f in args.fsync.split(",") if f.strip())
    load_before = os.getloadavg()[0]
    figures = side_by_side(args.jobs, args.repeats, fsyncs)
    print(f"{args.jobs} no-op jobs, one worker, median of {args.repeats} rounds in turns "
          f"(load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after):")
    for c in CONCURRENCIES:
        path = figures[f"runpod_c{c}"]["jobs_per_s"]
        cells = [f"RunPod fake {path}"]
        for fsync in fsyncs:
            v = figures[f"redis_{fsync}_c{c}"]["jobs_per_s"]
            cells.append(f"Redis {fsync} {v} ({v / path:.2f}x)" if v and path else
                         f"Redis {fsync} {v}")
        print(f"  concurrency {c}, jobs/s: " + ", ".join(cells))
    once = all(v["delivered_once"] for v in figures.values())
    print(f"every job delivered once: {once}")
    print(json.dumps(figures, separators=(",", ":")))
    return 0 if once else 1


if __name__ == "__main__":
    sys.exit(main())
