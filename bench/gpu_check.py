"""``make gpu-check``: everything the CUDA path owes a GPU, in one run, every result in files.

Usage (from the repository root)::

    python -m bench.gpu_check [--results DIR] [--wheels DIR] [--only tests|bench]
                              [--bench-args "--variants plain-fp16,eager,compile --runs 5"]

Steps, each one's output in its own file under ``--results`` (default ``gpu-check-results``;
``$OUT`` on a device machine):

1. ``env.txt``: Python, torch and its CUDA, the GPU, diffusers/transformers versions, the C
   compiler Triton will use.
2. ``install.log``: the Python packages the checks need that this machine lacks, installed
   from wheels in ``--wheels`` (default ``.whl``, git-ignored; ``make gpu-wheels`` fills it on
   a machine with network) into a temporary folder put first on the steps' ``PYTHONPATH``;
   nothing installed is replaced. A GPU machine often has torch and transformers, not diffusers.
3. ``pytest.log`` and ``pytest.xml``: ``pytest -m gpu tests/gpu``.
4. ``bench.log``, ``bench.txt``, ``bench.json``: ``python -m bench.sd_gpu``; ``batching.log``:
   ``python -m bench.sd_batching --model sd15 --device cuda`` (8 jobs of 512x512, 20 steps,
   ``SD_BATCH_MAX=8`` vs 1, on SD 1.5's architecture with random weights).
5. ``summary.txt``: one line per step, and what was skipped.

Without CUDA every step still runs: the GPU tests report themselves skipped and the benchmark
says it skipped, so the script can be tried end to end on any machine. Exit code 0 when every
step that ran passed (skips count as passed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# module the checks import -> the distribution's wheel name prefix (as pip saves it)
NEEDED = {
    "diffusers": "diffusers",
    "transformers": "transformers",
    "safetensors": "safetensors",
    "PIL": "pillow",
    "numpy": "numpy",
    "scipy": "scipy",
    "pydantic": "pydantic-",
    "pydantic_core": "pydantic_core",
    "pydantic_settings": "pydantic_settings",
    "dotenv": "python_dotenv",
    "annotated_types": "annotated_types",
    "typing_inspection": "typing_inspection",
    "tenacity": "tenacity",
    "requests": "requests",
    "freezegun": "freezegun",
    "prometheus_client": "prometheus_client",
    "pytest": "pytest-",
    "pytest_timeout": "pytest_timeout",
}
STEP_TIMEOUT_S = 1500


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "gpu-check-results")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl")
    parser.add_argument("--only", choices=("tests", "bench"), default=None)
    parser.add_argument("--bench-args", default="--budget-s 420",
                        help="arguments for bench.sd_gpu (default: %(default)s)")
    args = parser.parse_args(argv)
    results: Path = args.results
    results.mkdir(parents=True, exist_ok=True)
    summary: list[str] = []

    env_lines = environment()
    (results / "env.txt").write_text("\n".join(env_lines) + "\n")
    summary.append(f"env: {'; '.join(env_lines[:3])}")

    site, install_lines = install_missing(args.wheels)
    (results / "install.log").write_text("\n".join(install_lines) + "\n")
    summary.append(f"install: {install_lines[-1]}")
    child_env = dict(os.environ, PYTHONUNBUFFERED="1")
    if site is not None:
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )

    failed = False
    if args.only in (None, "tests"):
        command = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/gpu", "-q", "-rA",
                   "-p", "no:cacheprovider", f"--junitxml={results / 'pytest.xml'}"]
        code, seconds, tail = run_step(command, results / "pytest.log", child_env)
        failed |= code != 0
        summary.append(f"gpu tests: exit {code} in {seconds:.0f} s: {tail}")
    if args.only in (None, "bench"):
        command = [sys.executable, "-m", "bench.sd_gpu", "--out", str(results),
                   *shlex.split(args.bench_args)]
        code, seconds, tail = run_step(command, results / "bench.log", child_env)
        failed |= code != 0
        summary.append(f"benchmark: exit {code} in {seconds:.0f} s: {tail}")
        command = [sys.executable, "-m", "bench.sd_batching", "--model", "sd15", "--device",
                   "cuda", "--size", "512", "--steps", "20", "--jobs", "8", "--runs", "3"]
        code, seconds, tail = run_step(command, results / "batching.log", child_env)
        failed |= code != 0
        summary.append(f"batching benchmark: exit {code} in {seconds:.0f} s: {tail}")
    summary.append("gpu-check: FAILED" if failed else "gpu-check: passed (skips included)")
    (results / "summary.txt").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    print(f"results in {results}")
    return 1 if failed else 0


def environment() -> list[str]:
    lines = [f"python {platform.python_version()} ({sys.executable}) on {platform.machine()}"]
    try:
        import torch

        cuda = torch.cuda.is_available()
        gpu = torch.cuda.get_device_name(0) if cuda else "none"
        lines.append(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {cuda}")
        lines.append(f"GPU: {gpu}")
    except ImportError:
        lines.append("torch: not installed")
    for module in ("diffusers", "transformers", "triton"):
        spec = importlib.util.find_spec(module)
        lines.append(f"{module}: {version_of(module) if spec else 'not installed'}")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    lines.append(f"C compiler for Triton: {compiler or 'none found'}")
    lines.append(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    return lines


def version_of(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "installed"


def install_missing(wheels: Path) -> tuple[Path | None, list[str]]:
    """Install the wheels of the needed modules this Python lacks; (site folder or None, log)."""
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if not missing:
        return None, ["nothing missing"]
    lines = [f"missing: {', '.join(missing)}"]
    available = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    chosen = [w for m in missing for w in available if w.name.lower().startswith(NEEDED[m].lower())]
    lacking = [m for m in missing if not any(
        w.name.lower().startswith(NEEDED[m].lower()) for w in chosen)]
    if not chosen:
        lines.append(f"no wheels for them in {wheels} (make gpu-wheels): not installed")
        return None, lines
    site = Path(tempfile.mkdtemp(prefix="gpu-check-site-"))
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
               "--no-compile", "--no-cache-dir", "--target", str(site), *map(str, chosen)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines += [done.stdout.strip(), done.stderr.strip()]
    if done.returncode != 0:
        lines.append(f"pip install failed (exit {done.returncode})")
        return None, [line for line in lines if line]
    sys.path.insert(0, str(site))
    lines.append(f"installed {len(chosen)} wheels into {site}"
                 + (f"; still missing: {', '.join(lacking)}" if lacking else ""))
    return site, [line for line in lines if line]


def run_step(command: list[str], log: Path, env: dict[str, str]) -> tuple[int, float, str]:
    """Run ``command`` from the repository root, output to ``log``: (exit, seconds, last line)."""
    started = time.monotonic()
    with log.open("w") as out:
        out.write("$ " + shlex.join(command) + "\n")
        out.flush()
        try:
            code = subprocess.run(command, cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=STEP_TIMEOUT_S,
                                  check=False).returncode
        except subprocess.TimeoutExpired:
            code = 124
            out.write(f"\ntimed out after {STEP_TIMEOUT_S} s\n")
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return code, time.monotonic() - started, lines[-1].strip() if lines else ""


if __name__ == "__main__":
    raise SystemExit(main())
