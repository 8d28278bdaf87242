"""Where podworker's time goes in the no-op scenario: py-spy on the real process, per thread.

    .venv/bin/python bench/profile_podworker.py [--jobs 2000] [--model echo] [--concurrency 64]
                                                [--stream 250] [--cpu]

Starts the fake job API (as ``bench/compare.py`` does), queues the jobs, starts ``python -m app
run`` with ``MODEL=echo``, attaches ``py-spy record --threads --idle`` (``--cpu``: without
``--idle``, on-CPU samples only) (py-spy is installed into
``.venv-runpod``, not into the project's environment) for the whole run, stops the worker
with SIGTERM once every result is in, then prints for each thread the share of samples per
function (own time, and time under it), with file and line, and writes the raw py-spy output
(collapsed stacks, usable with speedscope or flamegraph.pl) to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.compare import RESULTS
from bench.harness import API_KEY, LONG_POLL_S, BenchServer, start, stop
from bench.runpod_venv import RUNPOD_VENV
from bench.workers import Workers


def ensure_py_spy() -> Path:
    py_spy = RUNPOD_VENV / "bin" / "py-spy"
    if not py_spy.exists():
        python = RUNPOD_VENV / "bin" / "python"
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(RUNPOD_VENV)], check=True,
                           timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "py-spy"], check=True,
                       timeout=600)
    return py_spy


def summarise(raw: Path, top: int) -> str:
    """Per thread: samples, then the functions with the most samples (own and under)."""
    own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    under: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        totals[thread] += count
        calls = frames[1:]
        if calls:
            own[thread][calls[-1]] += count
        for frame in set(calls):
            under[thread][frame] += count
    out = []
    for thread, total in totals.most_common():
        out.append(f"\n== {thread}: {total} samples")
        out.append("  own time:")
        for frame, n in own[thread].most_common(top):
            out.append(f"    {100 * n / total:5.1f}%  {frame}")
        out.append("  time under (inclusive):")
        for frame, n in under[thread].most_common(top):
            out.append(f"    {100 * n / total:5.1f}%  {frame}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="py-spy profile of podworker's no-op run")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--model", default="echo")
    parser.add_argument("--concurrency", type=int, default=None, help="CONCURRENCY")
    parser.add_argument("--stream", type=int, default=0,
                        help="each job streams this many chunks (the echo model's _echo.stream)")
    parser.add_argument("--top", type=int, default=14)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--cpu", action="store_true",
                        help="on-CPU samples only (default: idle samples too, per thread)")
    args = parser.parse_args(argv)
    py_spy = ensure_py_spy()
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RESULTS / "podworker-noop.pyspy.txt"
    with tempfile.TemporaryDirectory(prefix="podworker-prof-") as tmp_name, \
            BenchServer(host="127.0.0.1", port=0, long_poll_s=LONG_POLL_S,
                        api_key=API_KEY) as server:
        workers = Workers(server, Path(tmp_name), RUNPOD_VENV / "bin" / "python")
        launch = workers.podworker("prof", args.model, concurrency=args.concurrency,
                                   stream=args.stream > 0)
        ids = [f"prof-{i}" for i in range(args.jobs)]
        # Start the worker first, and queue the jobs once py-spy is attached.
        server.begin(ids)
        proc, _ = start(launch)
        spy = subprocess.Popen(
            [str(py_spy), "record", "--pid", str(proc.pid), "--threads",
             *([] if args.cpu else ["--idle"]), "--nonblocking", "--rate", str(args.rate),
             "--format", "raw", "-o", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        time.sleep(1.5)  # the worker is up and py-spy attached
        server.begin(ids)
        for i, job_id in enumerate(ids):
            server.submit({"i": i, "_echo": {"stream": args.stream}} if args.stream
                          else {"i": i}, job_id)
        done = server.all_done.wait(120)
        window = (server.last_result or 0) - (server.first_job or 0)
        stopped = stop(proc, launch)
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate(timeout=10)
    rate = server.run_results / window if window > 0 else 0.0
    print(f"{server.run_results}/{args.jobs} results (all: {done}) at {rate:.0f} jobs/s under "
          f"py-spy; worker exit {stopped.exit_code}")
    if not raw.exists():
        print("py-spy wrote nothing:", err.decode(errors="replace")[-2000:])
        return 1
    print(f"raw stacks: {raw}")
    print(summarise(raw, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
