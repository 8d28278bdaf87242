"""A/B: did podworker get slower? The no-op scenario alone, for another checkout and this one.

    .venv/bin/python bench/ab.py --other /tmp/podworker-5d39ae9 [--rounds 3] [--jobs 2000]
    .venv/bin/python bench/ab.py --other /tmp/old --concurrency 8    # CONCURRENCY=8 on both

Both are driven by this checkout's scenario code (``bench/scenarios.py``) against one fake job
API: ``python -m app run`` with ``MODEL=echo``, ``PYTHONPATH`` and the working folder pointing at
each tree, the same interpreter (this venv: the older tree's dependencies must be installed in
it, as they are for 5d39ae9). Runs are interleaved, A B A B ..., so a change of load on a shared
machine lands on both; prints each run, the medians and B / A, and writes
``bench/results/ab.json``. ``--concurrency`` is left unset by default (an older worker does not
know the setting; the default is 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script, sys.path[0] is bench/
    sys.path.insert(0, str(REPO))

from bench.harness import API_KEY, LONG_POLL_S, BenchServer  # noqa: E402
from bench.report import machine_busy  # noqa: E402
from bench.runpod_venv import RUNPOD_VENV  # noqa: E402
from bench.scenarios import run_jobs  # noqa: E402
from bench.workers import Workers  # noqa: E402

RESULTS = REPO / "bench" / "results"


def commit_of(tree: Path) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree,
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or "?"


def check_tree(tree: Path) -> None:
    """Exit unless ``python -m app`` under ``tree``'s settings imports ``tree``'s own code."""
    probe = subprocess.run([sys.executable, "-c", "import app, adapters; print(app.__file__); "
                            "print(adapters.__file__)"], cwd=tree, env={"PYTHONPATH": str(tree)},
                           capture_output=True, text=True, timeout=60)
    files = probe.stdout.split()
    if probe.returncode != 0 or not files or not all(Path(p).is_relative_to(tree) for p in files):
        raise SystemExit(f"bench/ab.py: {tree} does not import its own app: {probe.stdout}"
                         f"{probe.stderr[-800:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, required=True, help="the A checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=None)
    args = parser.parse_args(argv)
    trees = {"A": args.other.resolve(), "B": REPO}
    labels = {k: f"{k} {commit_of(t)} ({t})" for k, t in trees.items()}
    for tree in trees.values():
        check_tree(tree)
    runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    busy_before = machine_busy()
    with tempfile.TemporaryDirectory(prefix="podworker-ab-") as tmp_name, \
            BenchServer(host="127.0.0.1", port=0, long_poll_s=LONG_POLL_S,
                        api_key=API_KEY) as server:
        workers = Workers(server, Path(tmp_name), RUNPOD_VENV / "bin" / "python")
        for n in range(args.rounds):
            for key, tree in trees.items():
                tag = f"ab-{key}{n}"
                launch = workers.podworker(tag, concurrency=args.concurrency, repo=tree)
                figure = run_jobs(server, launch, tag, args.jobs, 120)
                runs[key].append(figure)
                print(f"round {n + 1} {key}: {figure['jobs_per_s']:8.1f} jobs/s  delivered once: "
                      f"{figure['delivered_once']}  other programs' CPU "
                      f"{figure['other_programs_cpu_percent']}%", flush=True)
    medians = {k: statistics.median(r["jobs_per_s"] for r in v) for k, v in runs.items()}
    out = {
        "trees": labels, "jobs": args.jobs, "concurrency": args.concurrency or 1,
        "jobs_per_s": {k: [r["jobs_per_s"] for r in v] for k, v in runs.items()},
        "median_jobs_per_s": medians,
        "b_over_a": round(medians["B"] / medians["A"], 3) if medians["A"] else None,
        "delivered_once": {k: all(r["delivered_once"] for r in v) for k, v in runs.items()},
        "machine_busy_before": busy_before, "machine_busy_after": machine_busy(),
        "runs": runs,
    }
    for key in trees:
        print(f"{labels[key]}: median {medians[key]:.1f} jobs/s of {out['jobs_per_s'][key]}")
    print(f"B / A = {out['b_over_a']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ab.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0 if all(out["delivered_once"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
