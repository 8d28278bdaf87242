"""A job API slow to accept results: many no-op jobs at high concurrency, job-done taking 20 ms.

    .venv/bin/python -m bench.backlog --jobs 2000        # a short run while developing
    .venv/bin/python -m bench.backlog --jobs 2000 --repo /tmp/older-checkout   # the same, A/B
    (make bench runs it with 20,000 jobs, concurrency 32: bench/compare.py)

The fake job API answers every job-done after ``done_delay_s`` (a real platform is tens of
milliseconds away, not on loopback). A worker that takes jobs faster than results are accepted
piles results up: memory grows and, past some point, it collapses. podworker holds at most
``MAX_UNDELIVERED`` jobs (256 by default, never fewer than ``CONCURRENCY``) from take to accepted
result; this run checks that, sampling throughout:

- ``most_held``: the most jobs handed out and not yet answered, seen from the server (sampled
  every 10 ms), against ``held_bound``;
- ``rss_mb``: the worker's resident memory at 10 %, 50 % and 100 % of the results, and its most
  (sampled every 0.25 s); ``rss_flat`` when the most stays within 25 % (plus 16 MB) of the
  figure at 10 %;
- and, as every run: jobs/s, each job delivered exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.harness import API_KEY, LONG_POLL_S, BenchServer
from bench.scenarios import run_jobs
from bench.workers import REPO, Workers


def held_bound_default() -> int:
    """``MAX_UNDELIVERED``'s default, read from the settings (the bound the benchmark checks)."""
    from app.settings import Settings

    return int(Settings.model_fields["MAX_UNDELIVERED"].default)


class _Sampler:
    """Samples, on a thread of its own, what the server sees held and the worker's memory."""

    def __init__(self, server: BenchServer, tag: str, jobs: int) -> None:
        self._server = server
        self._tag = tag
        self._jobs = jobs
        self._taken0, self._results0 = len(server.taken), len(server.results)
        self._done = threading.Event()
        self.most_held = 0
        self.rss: list[tuple[int, float]] = []  # (results so far, RSS in MB)
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(5)

    def _worker(self) -> psutil.Process | None:
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if any(self._tag in part for part in child.cmdline()):
                    return child
        return None

    def _run(self) -> None:
        worker: psutil.Process | None = None
        next_rss = 0.0
        while not self._done.wait(0.01):
            results = len(self._server.results) - self._results0
            held = len(self._server.taken) - self._taken0 - results
            self.most_held = max(self.most_held, held)
            now = time.monotonic()
            if now < next_rss:
                continue
            next_rss = now + 0.25
            if worker is None:
                worker = self._worker()
            if worker is not None:
                with contextlib.suppress(psutil.Error):
                    self.rss.append((results, worker.memory_info().rss / 2**20))

    def figures(self) -> dict[str, Any]:
        def at(share: float) -> float | None:
            wanted = share * self._jobs
            seen = [mb for done, mb in self.rss if done >= wanted]
            return round(seen[0], 1) if seen else None

        most = round(max((mb for _, mb in self.rss), default=0.0), 1)
        early = at(0.1)
        return {
            "most_held": self.most_held,
            "rss_mb": {"at_10_percent": early, "at_50_percent": at(0.5),
                       "at_end": round(self.rss[-1][1], 1) if self.rss else None, "most": most},
            "rss_flat": early is not None and most <= early * 1.25 + 16,
        }


def run_backlog(server: BenchServer, workers: Workers, jobs: int, *, concurrency: int = 32,
                done_delay_s: float = 0.02, cap_s: float = 900.0,
                repo: Path | None = None) -> dict[str, Any]:
    """``jobs`` no-op jobs at ``concurrency`` while job-done takes ``done_delay_s`` (``repo``:
    the podworker of another checkout, for an A/B)."""
    tag = f"pw-backlog-c{concurrency}"
    launch = workers.podworker(tag, concurrency=concurrency, repo=repo or REPO)
    sampler = _Sampler(server, tag, jobs)
    server.inject_fault("done", delay_s=done_delay_s, count=10**9)
    sampler.start()
    try:
        figure = run_jobs(server, launch, tag, jobs, cap_s)
    finally:
        sampler.stop()
        server.clear_faults()
    bound = max(held_bound_default(), concurrency)
    figure |= sampler.figures() | {"held_bound": bound, "concurrency": concurrency,
                                   "done_delay_ms": round(done_delay_s * 1000)}
    figure["held_within_bound"] = figure["most_held"] <= bound
    return figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="podworker against a job API slow at job-done")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--done-delay-ms", type=float, default=20.0)
    parser.add_argument("--repo", type=Path, default=None,
                        help="run the podworker of another checkout (an A/B)")
    parser.add_argument("--cap-s", type=float, default=900.0, help="give up after this long")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="podworker-backlog-") as tmp, \
            BenchServer(host="127.0.0.1", port=0, long_poll_s=LONG_POLL_S,
                        api_key=API_KEY) as server:
        workers = Workers(server, Path(tmp), Path(sys.executable))
        figure = run_backlog(server, workers, args.jobs, concurrency=args.concurrency,
                             done_delay_s=args.done_delay_ms / 1000, cap_s=args.cap_s,
                             repo=args.repo)
    figure.pop("log_tail", None)
    print(json.dumps(figure, indent=2))
    ok = figure["delivered_once"] and figure["held_within_bound"] and figure["rss_flat"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
