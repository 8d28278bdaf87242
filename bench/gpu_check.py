"""The GPU check: everything the CUDA path owes a GPU, in one command, every result in files.

The one line to run on a lent GPU machine (the README's Performance section gives it with the
device tool's ``carry``; no ``make`` needed)::

    python3 -m bench.gpu_check --results "$OUT" --deadline-s 480

What it promises, because a lent machine gives one command of at most 10 minutes and brings back
at most 8 files:

- **One overall deadline** (``--deadline-s``, 480 s by default): every step gets what is left of
  it (the tests at most ``--tests-share`` of the whole) and is killed, with its children, when
  that runs out; the run then says which step ran out of time and exits by the deadline.
- **Results written after every step**, so a run killed from outside still returns them:
  ``summary.txt`` (one line a step) and ``results.json`` (the same, with the attention backend
  and compile counters the benchmark reported) are rewritten each time.
- **At most 8 files** under ``--results``: ``env.txt`` (Python, torch, CUDA, cuDNN, the GPU,
  the C compiler, ``pip list``, ``nvidia-smi``), ``install.log`` (what was installed from the
  carried ``.whl/`` wheels and the import check, :mod:`bench.wheels`), ``pytest.log`` (the GPU
  tier), ``bench.log`` and ``bench.json`` (:mod:`bench.sd_gpu`), ``summary.txt``,
  ``results.json``: seven.
- **The GPU tier without the project's whole conftest**: ``pytest --confcutdir tests/gpu``
  (``tests/gpu/conftest.py`` says why), on three pytest-xdist workers where there is a GPU
  (its compile tests are CPU-bound and independent).
- ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` for every step, as in the pod image,
  unless the caller set it.

Without CUDA every step still runs: the GPU tests report themselves skipped and the benchmark
runs its machinery on the tiny pipeline on the CPU (no figures), so the command can be
rehearsed end to end on any machine (``make gpu-rehearsal``). Exit code 0 when every step
passed (skips count as passed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.wheels import child_path, install_carried  # noqa: E402

MAX_FILES = 8
RESULT_FILES = ("env.txt", "install.log", "pytest.log", "bench.log", "bench.json",
                "summary.txt", "results.json")
"""Every file this check writes (at most :data:`MAX_FILES` come back from a lent machine)."""
KILL_MARGIN_S = 15.0  # kept back from each step for killing it and writing the results


class Run:
    """The results folder and the overall deadline; rewrites the summary after each step."""

    def __init__(self, results: Path, deadline_s: float) -> None:
        self.results = results
        self.deadline_s = deadline_s
        self.started = time.monotonic()
        self.steps: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}

    def left(self) -> float:
        return self.deadline_s - (time.monotonic() - self.started)

    def record(self, name: str, code: int, seconds: float, tail: str) -> None:
        self.steps.append({"step": name, "exit": code, "seconds": round(seconds, 1),
                           "tail": tail[-300:]})
        self.write("running")

    def failed(self) -> bool:
        return any(step["exit"] != 0 for step in self.steps)

    def write(self, status: str) -> None:
        payload = {"status": status, "deadline_s": self.deadline_s,
                   "elapsed_s": round(time.monotonic() - self.started, 1),
                   "steps": self.steps, **self.extra}
        (self.results / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        lines = [f"{s['step']}: exit {s['exit']} in {s['seconds']:.0f} s: {s['tail']}"
                 for s in self.steps]
        lines += [f"{key}: {json.dumps(value)}" for key, value in self.extra.items()]
        lines.append(f"gpu-check: {status} ({payload['elapsed_s']:.0f} s of {self.deadline_s:.0f})")
        (self.results / "summary.txt").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "gpu-check-results")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl")
    parser.add_argument("--deadline-s", type=float, default=480.0,
                        help="the whole run's deadline (default %(default)s)")
    parser.add_argument("--tests-share", type=float, default=0.4,
                        help="most of the deadline the GPU tests may take (default %(default)s)")
    parser.add_argument("--only", choices=("tests", "bench"), default=None)
    parser.add_argument("--bench-args", default="",
                        help="more arguments for bench.sd_gpu (its --deadline-s is set here)")
    args = parser.parse_args(argv)
    results: Path = args.results
    results.mkdir(parents=True, exist_ok=True)
    run = Run(results, args.deadline_s)
    run.write("starting")

    started = time.monotonic()
    (results / "env.txt").write_text("\n".join(environment()) + "\n")
    run.record("env", 0, time.monotonic() - started, "env.txt")

    started = time.monotonic()
    report = install_carried(args.wheels, ROOT)
    (results / "install.log").write_text("\n".join(report.lines) + "\n")
    run.record("install", 0 if report.ok else 1, time.monotonic() - started,
               report.lines[-1] if report.lines else "")
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=child_path(report.site, ROOT))
    env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

    if args.only in (None, "tests"):
        command = [sys.executable, "-m", "pytest", "--confcutdir", "tests/gpu", "-m", "gpu",
                   "tests/gpu", "-q", "-rA", "-p", "no:cacheprovider"]
        if importlib.util.find_spec("xdist") is not None and shutil.which("nvidia-smi"):
            command += ["-n", "3"]
        budget = min(args.deadline_s * args.tests_share, run.left() - KILL_MARGIN_S)
        code, seconds, tail = run_step(command, results / "pytest.log", env, budget)
        run.record("gpu tests", code, seconds, tail)
    if args.only in (None, "bench"):
        budget = run.left() - KILL_MARGIN_S
        command = [sys.executable, "-m", "bench.sd_gpu", "--json", str(results / "bench.json"),
                   "--deadline-s", f"{max(budget - KILL_MARGIN_S, 1):.0f}",
                   *shlex.split(args.bench_args)]
        code, seconds, tail = run_step(command, results / "bench.log", env, budget)
        run.record("benchmark", code, seconds, tail)
        run.extra.update(bench_digest(results / "bench.json"))
    files = sorted(p.name for p in results.rglob("*") if p.is_file())
    run.extra["files"] = files
    status = "FAILED" if run.failed() else "passed (skips included)"
    if len(files) > MAX_FILES:
        status = f"FAILED: {len(files)} files under {results}, at most {MAX_FILES} come back"
    run.write(status)
    print((results / "summary.txt").read_text(), end="")
    print(f"results in {results}")
    return 0 if status.startswith("passed") else 1


def environment() -> list[str]:
    lines = [f"python {platform.python_version()} ({sys.executable}) on {platform.machine()}",
             f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"PYTORCH_CUDA_ALLOC_CONF: {os.environ.get('PYTORCH_CUDA_ALLOC_CONF', 'unset')}"]
    try:
        torch: Any = importlib.import_module("torch")

        cuda = torch.cuda.is_available()
        lines.append(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
                     f"cuDNN {torch.backends.cudnn.version()}, available: {cuda}")
        if cuda:
            props = torch.cuda.get_device_properties(0)
            lines.append(f"GPU: {props.name}, capability {props.major}.{props.minor}, "
                         f"{props.total_memory / 2**30:.1f} GiB")
    except Exception as exc:  # the log says what is wrong; the steps say the rest
        lines.append(f"torch: {type(exc).__name__}: {exc}")
    for module in ("diffusers", "transformers", "triton", "accelerate", "pydantic"):
        lines.append(f"{module}: {version_of(module)}")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    lines.append(f"C compiler for Triton: {compiler or 'none found'}")
    lines += ["", "$ nvidia-smi", *command_output(["nvidia-smi"])]
    lines += ["", "$ pip list", *command_output([sys.executable, "-m", "pip", "list"])]
    return lines


def version_of(module: str) -> str:
    if importlib.util.find_spec(module) is None:
        return "not installed (before the carried wheels)"
    try:
        return importlib.metadata.version(module)
    except Exception:
        return "installed"


def command_output(command: list[str]) -> list[str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"({type(exc).__name__}: {exc})"]
    return (done.stdout + done.stderr).rstrip().splitlines()


def run_step(command: list[str], log: Path, env: dict[str, str],
             budget_s: float) -> tuple[int, float, str]:
    """Run ``command`` from the repository root in its own process group, output to ``log``,
    killed with its children after ``budget_s``: (exit, seconds, last line)."""
    started = time.monotonic()
    with log.open("w") as out:
        out.write("$ " + shlex.join(command) + "\n")
        out.flush()
        if budget_s <= 1:
            code = 124
            out.write("not run: out of time (nothing left before the deadline)\n")
        else:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = process.wait(timeout=budget_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                code = 124
                out.write(f"\nkilled: out of time after {budget_s:.0f} s (the deadline)\n")
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return code, time.monotonic() - started, lines[-1].strip() if lines else ""


def bench_digest(path: Path) -> dict[str, Any]:
    """The attention backend, compile counters and figures of each benchmark row."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"bench": "no bench.json"}
    rows = payload.get("rows", [])
    keys = ("images_per_s", "ratio_to_plain", "cold_start_s", "first_job_s", "attention",
            "compile", "note")
    return {"bench": {row.get("variant", "?"): {k: row.get(k) for k in keys if row.get(k)}
                      for row in rows}, "bench_mode": payload.get("mode")}


if __name__ == "__main__":
    raise SystemExit(main())
