"""Load time of full-size SD 1.5 weights: podworker's loader vs plain ``from_pretrained().to()``.

    .venv/bin/python -m bench.load_time                      # CPU, 3 rounds each, in turns
    .venv/bin/python -m bench.load_time --rounds 1           # a smoke check
    python -m bench.load_time --device cuda --dtype fp16     # on a GPU

The weights are SD 1.5's architecture (UNet 860M, VAE 84M, CLIP text encoder 123M parameters)
with random values, saved once as a diffusers folder of safetensors files (``--model-dir`` keeps
it between runs; about 2 GB in fp16). Each load runs in a fresh process, so neither path
inherits the other's imports or allocations (the files stay in the page cache: after the first
load both read from memory, which is what a warm pod's restart sees), and reports its seconds
from ``from_pretrained`` to the pipeline on the device, and its process's peak RSS:

- ``plain``: ``StableDiffusionPipeline.from_pretrained(folder, dtype=...).to(device)``, what a
  template does;
- ``podworker``: :func:`adapters.stable_diffusion.pipelines.load_pipeline` with ``device``, then
  ``.to(device)``: on CUDA the weights go straight onto the GPU (``device_map="cuda"``), with no
  full host copy first; on the CPU both are a host load. (The worker's ``load`` reads this way
  too on CUDA, once it has decided from the files' headers that no offload is needed.)

The two run in turns (plain, podworker, plain, ...) and medians are reported. ``make bench``
runs one small round of it (``bench/compare.py``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VARIANTS = ("plain", "podworker")


def build(folder: Path, dtype_name: str) -> Path:
    """SD 1.5's architecture with random weights at ``folder`` (kept when already there)."""
    if (folder / "model_index.json").is_file():
        return folder
    import torch

    from bench.sd15 import build_sd15

    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    staging = folder.with_name(folder.name + ".building")
    build_sd15(staging, torch, device=device, dtype=_dtype(torch, dtype_name))
    staging.rename(folder)
    print(f"  built in {time.perf_counter() - started:.1f} s on {device}", flush=True)
    return folder


def load_once(variant: str, folder: Path, device: str, dtype_name: str) -> dict[str, Any]:
    """One load in this process: seconds to the pipeline on ``device``, and peak RSS."""
    import diffusers
    import torch

    from adapters.stable_diffusion import pipelines
    from adapters.stable_diffusion.families import detect_family
    from adapters.stable_diffusion.loading import dtype_argument, quiet_progress_bars

    quiet_progress_bars()
    dtype = _dtype(torch, dtype_name)
    started = time.perf_counter()
    if variant == "plain":
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(
            str(folder), **dtype_argument(dtype), safety_checker=None,
            requires_safety_checker=False, local_files_only=True).to(device)
    else:
        pipe = pipelines.load_pipeline(diffusers, detect_family(str(folder)), str(folder),
                                       dtype=dtype, allow_download=False, device=device)
        pipe = pipe.to(device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    where = {str(p.device) for p in pipe.unet.parameters()}
    return {"seconds": round(seconds, 3), "peak_rss_mb": _peak_rss_mb(),
            "unet_on": sorted(where)}


def measure(folder: Path, *, device: str = "cpu", dtype_name: str = "fp16",
            rounds: int = 3) -> dict[str, Any]:
    """Medians of ``rounds`` loads of each variant, in turns, each in a fresh process."""
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    for _ in range(rounds):
        for variant in VARIANTS:
            done = subprocess.run(
                [sys.executable, "-m", "bench.load_time", "--one", variant, "--model-dir",
                 str(folder), "--device", device, "--dtype", dtype_name],
                cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{variant} load failed: {done.stderr[-2000:]}")
            runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
    figures: dict[str, Any] = {"model": "SD 1.5 architecture, random weights", "device": device,
                               "dtype": dtype_name, "rounds": rounds,
                               "size_gb": round(_size(folder) / 1e9, 2)}
    for variant, results in runs.items():
        figures[variant] = {
            "seconds_median": round(statistics.median(r["seconds"] for r in results), 2),
            "peak_rss_mb_median": round(statistics.median(r["peak_rss_mb"] for r in results)),
            "seconds": [r["seconds"] for r in results],
            "unet_on": results[-1]["unet_on"],
        }
    figures["podworker_over_plain"] = round(
        figures["podworker"]["seconds_median"] / figures["plain"]["seconds_median"], 2)
    return figures


def summary(f: dict[str, Any]) -> str:
    return (f"load SD 1.5 ({f['size_gb']} GB {f['dtype']}) to {f['device']}, median of "
            f"{f['rounds']}: plain from_pretrained().to() {f['plain']['seconds_median']} s, "
            f"peak RSS {f['plain']['peak_rss_mb_median']} MB; podworker "
            f"{f['podworker']['seconds_median']} s, peak RSS "
            f"{f['podworker']['peak_rss_mb_median']} MB ({f['podworker_over_plain']}x the time)")


def _dtype(torch: Any, name: str) -> Any:
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def _peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model-dir", type=Path, help="where the weights are kept (built there "
                        "once); default: a temporary folder")
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(load_once(args.one, args.model_dir, args.device, args.dtype)))
        return 0
    with tempfile.TemporaryDirectory(prefix="podworker-load-") as tmp:
        folder = build(args.model_dir or Path(tmp) / "sd15", args.dtype)
        figures = measure(folder, device=args.device, dtype_name=args.dtype, rounds=args.rounds)
    print(summary(figures))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
