"""Dynamic batching's throughput: N small jobs at once, batched (``SD_BATCH_MAX``=N) vs one by
one (``SD_BATCH_MAX``=1), on the Stable Diffusion adapter itself.

    .venv/bin/python -m bench.sd_batching                   # 8 jobs, tiny pipeline, CPU
    .venv/bin/python -m bench.sd_batching --jobs 8 --runs 5 --size 64 --steps 4
    python -m bench.sd_batching --model sd15 --device cuda --size 512 --steps 20  # on a GPU

Each round submits N jobs from N threads at once (as a worker with ``CONCURRENCY``=N does), each
with its own prompt and seed, and times until the last one has its images (PNG encoding, done
later by the store stage, is not timed). The two models are loaded from the same weights and
timed in turns, so a change of load on a shared machine lands on both; the median of the runs
is reported, with the batches each one formed. ``make bench`` runs it (``bench/compare.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from domain.errors import PodworkerError  # noqa: E402
from domain.execution import DetachedContext  # noqa: E402


def _round(model: Any, jobs: list[dict[str, Any]]) -> float:
    """Seconds for ``jobs``, each run from its own thread, all started together."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs) + 1)

    def run(n: int) -> None:
        start.wait()
        try:
            model.run(jobs[n], DetachedContext(f"job-{n}"))
        except PodworkerError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(jobs))]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} job(s) failed: {errors[0]}")
    return seconds


def measure(model_path: str, *, jobs: int = 8, runs: int = 3, size: int = 64, steps: int = 4,
            device: str = "cpu") -> dict[str, Any]:
    """Jobs per second batched and one by one (medians of ``runs``), and the speed-up."""
    from adapters.stable_diffusion.model import StableDiffusionModel

    work = [{"prompt": f"a small picture, number {n}", "seed": n, "width": size,
             "height": size, "num_inference_steps": steps} for n in range(jobs)]
    models = {name: StableDiffusionModel(model_path, device=device, batch_max=batch,
                                         batch_wait_s=0.05)
              for name, batch in (("one_by_one", 1), ("batched", jobs))}
    for model in models.values():
        model.load()
        _round(model, work[:1])  # the first call pays one-off costs: not timed
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(runs):
        for name, model in models.items():
            seconds[name].append(_round(model, work))
    figures: dict[str, Any] = {"jobs": jobs, "rounds": runs, "size": f"{size}x{size}",
                               "steps": steps, "device": device}
    for name, model in models.items():
        median = statistics.median(seconds[name])
        figures[name] = {"seconds_median": round(median, 3),
                         "jobs_per_s": round(jobs / median, 2),
                         "batches": dict(sorted(model.device_queue.batch_sizes.items()))}
    figures["speedup"] = round(figures["batched"]["jobs_per_s"]
                               / figures["one_by_one"]["jobs_per_s"], 2)
    return figures


def tiny_model(folder: Path) -> str:
    from adapters.stable_diffusion.tiny import make_tiny_model

    return str(make_tiny_model(folder / "tiny-sd"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a diffusers folder, or sd15: SD 1.5's architecture "
                        "with random weights (CUDA only); default: the tiny pipeline")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not _cuda_available():
        print("SKIPPED: no CUDA device; nothing timed")
        return 0
    with tempfile.TemporaryDirectory(prefix="podworker-batching-") as tmp:
        path = args.model or tiny_model(Path(tmp))
        if args.model == "sd15":
            import torch

            from bench.sd15 import build_sd15

            path = str(build_sd15(Path(tmp) / "sd15", torch))
        figures = measure(path, jobs=args.jobs, runs=args.runs, size=args.size,
                          steps=args.steps, device=args.device)
    figures["model"] = "tiny" if args.model is None else args.model
    print(f"{args.jobs} jobs of {figures['size']}, {args.steps} steps, {args.device}: "
          f"one by one {figures['one_by_one']['jobs_per_s']} jobs/s, batched "
          f"{figures['batched']['jobs_per_s']} jobs/s ({figures['speedup']}x); batches "
          f"{figures['batched']['batches']}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
