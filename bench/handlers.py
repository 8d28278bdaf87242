"""A RunPod handler file, unchanged, under RunPod's SDK worker and under podworker: jobs/s.

    .venv/bin/python bench/handlers.py            # about 1 minute: the figures of issue 22
    .venv/bin/python bench/handlers.py --jobs 500 --io-jobs 128 --sdk-cap 20

The file is ``bench/sdk_handler.py``, the SDK side of ``make bench``; podworker runs it with
``python -m app handler`` from the same venv (``.venv-runpod``, ``make setup``), against the same
fake job API (``fakeplatform``, in this process, 1 s long-poll), same jobs:

- no-op (returns its input), concurrency 1: the SDK sleeps 1 s whenever its one slot is full,
  so about a job a second; podworker takes the next job as soon as the slot is free;
- a sync ``def`` handler waiting 1 s (I/O-bound), ``concurrency_modifier`` returning 32: the SDK
  calls a sync handler on its event loop, one job at a time; podworker on 32 threads.

Targets: podworker >= 200x the SDK on the first, >= 25x on the second. ``make bench``
(``bench/compare.py``) runs the same two podworker runs beside its SDK runs of the file.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script, sys.path[0] is bench/
    sys.path.insert(0, str(REPO))

from bench.harness import API_KEY, LONG_POLL_S, BenchServer  # noqa: E402
from bench.report import HANDLER_IO_TIMES, HANDLER_NOOP_TIMES, IO_CONCURRENCY  # noqa: E402
from bench.runpod_venv import RunpodVenvError, runpod_venv  # noqa: E402
from bench.scenarios import run_jobs  # noqa: E402
from bench.workers import Workers  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="no-op jobs (default 500)")
    parser.add_argument("--io-jobs", type=int, default=64, help="1 s jobs (default 64)")
    parser.add_argument("--sdk-cap", type=float, default=20.0,
                        help="seconds each SDK run may take (it does about a job a second)")
    args = parser.parse_args(argv)
    try:
        venv = runpod_venv()
    except RunpodVenvError as exc:
        raise SystemExit(f"bench: {exc}") from None
    print(f"runpod {venv.runpod_version} (Python {venv.python_version}), handler file "
          "bench/sdk_handler.py", flush=True)
    figures = {}
    with tempfile.TemporaryDirectory(prefix="podworker-handlers-") as tmp, \
            BenchServer(host="127.0.0.1", port=0, long_poll_s=LONG_POLL_S,
                        api_key=API_KEY) as server:
        workers = Workers(server, Path(tmp), venv.python)
        runs = (
            ("noop, concurrency 1", "noop", 1, args.jobs, args.sdk_cap, HANDLER_NOOP_TIMES),
            (f"sync 1 s handler, concurrency {IO_CONCURRENCY}", "io_sync", IO_CONCURRENCY,
             args.io_jobs, args.sdk_cap, HANDLER_IO_TIMES),
        )
        for label, handler, concurrency, count, sdk_cap, times in runs:
            sdk = run_jobs(server, workers.runpod(f"rp-{handler}", handler, concurrency),
                           f"rp-{handler}", count, sdk_cap)
            mine = run_jobs(server, workers.handler(f"pwh-{handler}", handler, concurrency),
                            f"pwh-{handler}", count, 60 + count)
            ratio = mine["jobs_per_s"] / sdk["jobs_per_s"] if sdk["jobs_per_s"] else None
            figures[label] = (sdk, mine, ratio, times)
    ok = True
    for label, (sdk, mine, ratio, times) in figures.items():
        met = ratio is not None and ratio >= times and mine["delivered_once"]
        ok = ok and met
        print(f"{label}: podworker {mine['jobs_per_s']:.2f} jobs/s ({mine['done']} jobs, "
              f"delivered once: {mine['delivered_once']}), SDK {sdk['jobs_per_s']:.2f} jobs/s "
              f"({sdk['done']} jobs in {sdk['capped_after_s'] or 'all'} s): "
              f"{ratio or 0:.1f}x, target >= {times}x: {'met' if met else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
