"""Stable Diffusion on CUDA: this adapter beside plain diffusers, at 512x512, 25 steps.

Usage (from the repository root, on a machine with a CUDA GPU)::

    python -m bench.sd_gpu [--batch 1] [--runs 5] [--variants plain-fp16,eager,compile]
                           [--out DIR] [--budget-s 420]

It builds the full-size SD 1.5 architecture with random weights (``bench/sd15.py``: the same
compute as the real model, no download) and times each variant, one after the other:

- ``plain-fp32`` / ``plain-fp16``: ``StableDiffusionPipeline.from_pretrained(path)`` on CUDA,
  every other default; PNG encoding as a plain user would (Pillow's default, level 6);
- ``eager``: ``StableDiffusionModel(path, device="cuda")``: fp16, SDPA, channels-last UNet and
  VAE, uint8 on the device, PNG level 1 (the worker encodes on its store thread);
- ``eager-nchw``: the same without channels-last;
- ``compile``: with ``torch.compile`` (Inductor, default mode), every served shape compiled at
  load; ``compile-cudagraphs``: mode ``reduce-overhead``; ``compile-max``: ``max-autotune``
  with fused QKV projections and the VAE decoder compiled too.

For each: the first-job latency (build or load, warm-up and compile included, plus the first
call), then steady images/s over ``--runs`` timed calls after it, the PNG time per image, and
the ratio to ``plain-fp16``. Model time and PNG time are reported apart: the worker encodes on
another thread, so its throughput is the model's. The Inductor cache starts empty (a cold start).
Variants left when ``--budget-s`` is spent are skipped and say so. Without CUDA it prints that
it skipped and exits 0; ``--out DIR`` then holds ``bench.json`` saying so.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from domain.execution import DetachedContext

SIZE = 512
STEPS = 25
GUIDANCE = 7.5
PROMPT = "a photo of an astronaut riding a horse on mars, highly detailed"
VARIANTS = ("plain-fp32", "plain-fp16", "eager", "eager-nchw", "compile", "compile-cudagraphs",
            "compile-max")
DEFAULT_VARIANTS = "plain-fp16,eager,compile,compile-cudagraphs"


@dataclass
class Row:
    variant: str
    first_job_s: float | None = None  # cold start: load (+ warm-up, compile) and one call
    load_s: float | None = None
    s_per_call: float | None = None  # steady, model only
    images_per_s: float | None = None  # steady, model only
    png_ms_per_image: float | None = None
    peak_gib: float | None = None
    ratio_to_plain_fp16: float | None = None
    note: str = ""


def png_ms(images: list[Any], encode: Callable[[Any], bytes]) -> float:
    started = time.perf_counter()
    for image in images:
        encode(image)
    return (time.perf_counter() - started) * 1000 / max(1, len(images))


def steady(torch: Any, call: Callable[[], object], runs: int) -> float:
    """Seconds per call over ``runs`` calls (the caller made the first, untimed)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(runs):
        call()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / runs


def plain_variant(torch: Any, path: str, row: Row, batch: int, runs: int) -> None:
    diffusers: Any = importlib.import_module("diffusers")
    from adapters.stable_diffusion.loading import dtype_argument

    started = time.perf_counter()
    extra = dtype_argument(torch.float16) if row.variant == "plain-fp16" else {}
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        path, safety_checker=None, requires_safety_checker=False, **extra
    ).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    row.load_s = time.perf_counter() - started

    def call() -> Any:
        return pipe(PROMPT, width=SIZE, height=SIZE, num_inference_steps=STEPS,
                    guidance_scale=GUIDANCE, num_images_per_prompt=batch).images

    images = call()
    row.first_job_s = time.perf_counter() - started
    row.s_per_call = steady(torch, call, runs)

    def encode(image: Any) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")  # Pillow's default level, 6
        return buffer.getvalue()

    row.png_ms_per_image = png_ms(images, encode)


def adapter_variant(torch: Any, path: str, row: Row, batch: int, runs: int, cache: Path) -> None:
    from adapters.stable_diffusion.acceleration import CompileOptions
    from adapters.stable_diffusion.limits import SdLimits
    from adapters.stable_diffusion.model import StableDiffusionModel

    compile_options: CompileOptions | bool = False
    if row.variant == "compile":
        compile_options = CompileOptions(cache_dir=cache)
    elif row.variant == "compile-cudagraphs":
        compile_options = CompileOptions(mode="reduce-overhead", cache_dir=cache)
    elif row.variant == "compile-max":
        compile_options = CompileOptions(mode="max-autotune", vae=True, cache_dir=cache)
    started = time.perf_counter()
    model = StableDiffusionModel(
        path, device="cuda", compile=compile_options, sizes=[(SIZE, SIZE)],
        limits=SdLimits(max_outputs=batch),  # warm only what is timed; any --batch works
        channels_last=row.variant != "eager-nchw", fuse_qkv=row.variant == "compile-max",
    )
    model.load()
    row.load_s = time.perf_counter() - started
    job = {"prompt": PROMPT, "width": SIZE, "height": SIZE, "num_inference_steps": STEPS,
           "guidance_scale": GUIDANCE, "num_outputs": batch, "scheduler": "PNDM", "seed": 1}

    def call() -> Any:
        return model.run(job, DetachedContext("bench"))

    output = call()
    row.first_job_s = time.perf_counter() - started
    row.s_per_call = steady(torch, call, runs)
    row.png_ms_per_image = png_ms([item["image"] for item in output], lambda a: a.data)
    if model.compilation is not None and not model.compilation.active:
        row.note = f"compile fell back to eager: {model.compilation.failure}"


def report(rows: list[Row]) -> list[str]:
    lines = [f"{'variant':<20} {'first job s':>11} {'load s':>8} {'images/s':>9} "
             f"{'x plain fp16':>12} {'PNG ms/img':>10} {'peak GiB':>9}  note"]
    for r in rows:
        def num(value: float | None, fmt: str) -> str:
            return format(value, fmt) if value is not None else "-"

        lines.append(
            f"{r.variant:<20} {num(r.first_job_s, '11.1f')} {num(r.load_s, '8.1f')} "
            f"{num(r.images_per_s, '9.3f')} {num(r.ratio_to_plain_fp16, '12.2f')} "
            f"{num(r.png_ms_per_image, '10.1f')} {num(r.peak_gib, '9.2f')}  {r.note}"
        )
    return lines


def write(out: Path | None, payload: dict[str, Any], lines: list[str]) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "bench.txt").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    parser.add_argument("--runs", type=int, default=5, help="timed calls per variant (default 5)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, default=None, help="write bench.json and bench.txt")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip the variants left once this many seconds have passed")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or args.batch < 1 or args.runs < 1:
        parser.error(f"unknown variants {unknown}" if unknown else "--batch and --runs >= 1")
    started = time.monotonic()
    try:
        import torch
    except ImportError:
        print("torch is not installed: pip install 'podworker[sd]'", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        line = "SKIPPED: no CUDA device (torch.cuda.is_available() is False); nothing timed"
        print(line)
        write(args.out, {"skipped": line}, [line])
        return 0
    diffusers: Any = importlib.import_module("diffusers")
    from adapters.stable_diffusion.loading import quiet_progress_bars
    from bench.sd15 import build_sd15

    quiet_progress_bars()
    # Random weights overflow fp16 now and then: NaN pixels, harmless for timing, noisy in numpy.
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    header = [
        f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, "
        f"diffusers {diffusers.__version__}; {time.strftime('%Y-%m-%d', time.gmtime())}",
        f"{SIZE}x{SIZE}, {STEPS} steps, guidance {GUIDANCE}, PNDM, batch {args.batch}, "
        f"{args.runs} timed calls after the first",
    ]
    print("\n".join(header), flush=True)
    rows = [Row(v) for v in variants]
    with tempfile.TemporaryDirectory(prefix="sd15-random-") as tmp:
        path = str(build_sd15(Path(tmp) / "sd15", torch))
        release(torch)
        for row in rows:
            if args.budget_s is not None and time.monotonic() - started > args.budget_s:
                row.note = "skipped: out of time (--budget-s)"
                continue
            try:
                if row.variant.startswith("plain"):
                    plain_variant(torch, path, row, args.batch, args.runs)
                else:
                    adapter_variant(torch, path, row, args.batch, args.runs,
                                    Path(tmp) / "compile-cache")
                row.images_per_s = args.batch / row.s_per_call if row.s_per_call else None
                row.peak_gib = torch.cuda.max_memory_allocated() / 2**30
            except Exception as exc:  # one broken variant must not lose the others' numbers
                row.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            release(torch)
            print(report([row])[-1], flush=True)
    base = next((r.images_per_s for r in rows if r.variant == "plain-fp16"), None)
    for row in rows:
        if base and row.images_per_s:
            row.ratio_to_plain_fp16 = row.images_per_s / base
    lines = [*header, "", *report(rows)]
    print("\nside by side:\n" + "\n".join(report(rows)))
    write(args.out, {"header": header, "rows": [asdict(r) for r in rows]}, lines)
    return 0


def release(torch: Any) -> None:
    torch._dynamo.reset()  # the next variant's model compiles afresh, within the recompile limit
    gc.collect()
    torch.cuda.empty_cache()


if __name__ == "__main__":
    raise SystemExit(main())
