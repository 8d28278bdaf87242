"""Stable Diffusion on CUDA: this adapter beside plain diffusers, each variant in its own process.

Usage (from the repository root, on a machine with a CUDA GPU)::

    python -m bench.sd_gpu [--plan sd15:plain,eager,...;sdxl:...] [--runs 10]
                           [--json PATH] [--deadline-s 420]

Fair by construction:

- **One process per variant, its own compile cache.** A variant's cold start (process start to
  first image: imports, load, warm-up and compiling, the first call) is honest: nothing is
  warm from an earlier variant, except for ``compile-warm``, which is ``compile`` again with
  ``compile``'s cache folder (a restart, or a pod of a warmed image). Each variant is killed
  at the deadline; its figures so far are kept.
- **The same work on both sides**: the same prompt, size, steps, guidance and seed; every call
  returns ``output_type="pt"`` and is turned into 8-bit pixels on the host by the worker's own
  conversion; PNG encoding is timed apart (the worker encodes on another thread).
- **Steady speed is the median of ``--runs`` (at least 10) timed calls** after the first; the
  first call's time (first-job latency) and the cold start are reported apart.

Variants: ``plain`` (``from_pretrained`` in the family's dtype, ``.to("cuda")``, every other
default); ``plain-compile`` (plain plus diffusers' documented ``torch.compile`` recipe:
channels-last, fused QKV, Inductor's tuning flags, ``fullgraph=True`` on the denoiser and the
VAE decoder); ``eager`` (``StableDiffusionModel``: SDPA, channels-last, the attention check, the
fp16-safe VAE); ``compile``, ``compile-warm``, ``compile-tuned`` (``SD_COMPILE_TUNED``),
``compile-cudagraphs`` (``reduce-overhead``); ``fbcache`` (``compile`` plus the lossy
first-block cache at 0.1, Flux only; behind an image-similarity gate: its PSNR against
``eager``'s first image must be at least :data:`GATE_PSNR_DB`). Architectures
(:mod:`bench.architectures`): SD 1.5 512x512 25 steps, SDXL 1024x1024 30 steps, FLUX.1-schnell
1024x1024 4 steps, full size with random weights, in that order, as time allows.

Without CUDA it runs the same machinery on the tiny pipeline on the CPU (``mode: smoke``: no
figures worth reading) so that ``make gpu-rehearsal`` proves it works. ``--json`` is rewritten
after every variant.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a photo of an astronaut riding a horse on mars, highly detailed"
SEED = 1
GATE_PSNR_DB = 25.0
GPU_PLAN = ("sd15:plain,eager,compile,compile-warm,plain-compile,compile-tuned;"
            "sdxl:plain,eager,compile;flux-schnell:plain,eager,compile,fbcache")
SMOKE_PLAN = "tiny:plain,compile"
VARIANTS = ("plain", "plain-compile", "eager", "compile", "compile-warm", "compile-tuned",
            "compile-cudagraphs", "fbcache")


@dataclass
class Row:
    arch: str
    variant: str
    cold_start_s: float | None = None  # process start -> first image
    load_s: float | None = None  # load (with warm-up and compiling) alone
    first_job_s: float | None = None  # the first call after the load
    median_s: float | None = None  # steady: median seconds per call
    images_per_s: float | None = None
    ratio_to_plain: float | None = None
    png_ms: float | None = None
    peak_gib: float | None = None
    psnr_vs_eager_db: float | None = None
    attention: str | None = None
    compile: dict[str, Any] = field(default_factory=dict)
    note: str = ""


# --- one variant, in its own process ------------------------------------------------------

def child(args: argparse.Namespace) -> int:
    """Time one variant; print a ``ROW {json}`` line after each milestone."""
    import torch

    from bench.architectures import ARCHS

    arch = ARCHS[args.arch]
    row = Row(arch.name, args.variant)
    cuda = args.device == "cuda"

    def emit() -> None:
        print("ROW " + json.dumps(asdict(row)), flush=True)

    started = time.perf_counter()
    call, describe = (plain_call if args.variant.startswith("plain") else adapter_call)(
        torch, arch, args)
    row.load_s = time.perf_counter() - started
    emit()
    first = time.perf_counter()
    pixels = call()
    sync(torch, cuda)
    row.first_job_s = time.perf_counter() - first
    row.cold_start_s = time.time() - args.spawned_at
    emit()
    if args.pixels:
        import numpy as np

        np.save(args.pixels, pixels[0])
    times = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.runs):
        begun = time.perf_counter()
        call()
        sync(torch, cuda)
        times.append(time.perf_counter() - begun)
    row.median_s = statistics.median(times)
    row.images_per_s = 1 / row.median_s
    row.peak_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    row.png_ms = png_ms(pixels)
    row.attention, row.note = describe()
    row.compile = compile_counters()
    emit()
    return 0


def plain_call(torch: Any, arch: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    import diffusers

    from adapters.stable_diffusion.loading import dtype_argument, quiet_progress_bars
    from adapters.stable_diffusion.output_images import to_pixels

    quiet_progress_bars()
    dtype = getattr(torch, arch.dtype) if args.device == "cuda" else torch.float32
    extra = {"safety_checker": None, "requires_safety_checker": False} if arch.name in (
        "sd15", "tiny") else {}
    pipe = diffusers.DiffusionPipeline.from_pretrained(
        args.weights, **dtype_argument(dtype), **extra).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    if args.variant == "plain-compile":
        denoiser = "transformer" if hasattr(pipe, "transformer") else "unet"
        if denoiser == "unet":
            pipe.unet.to(memory_format=torch.channels_last)
        (pipe if denoiser == "unet" else pipe.transformer).fuse_qkv_projections()
        backend = "inductor" if args.device == "cuda" else "eager"
        if backend == "inductor":
            for name, value in {"conv_1x1_as_mm": True, "coordinate_descent_tuning": True,
                                "epilogue_fusion": False,
                                "coordinate_descent_check_all_directions": True}.items():
                setattr(torch._inductor.config, name, value)
        setattr(pipe, denoiser, torch.compile(getattr(pipe, denoiser), fullgraph=True,
                                              backend=backend))
        pipe.vae.decode = torch.compile(pipe.vae.decode, fullgraph=True, backend=backend)
    generator = torch.Generator(device="cpu")
    call_args: dict[str, Any] = {"prompt": PROMPT, "width": arch.size, "height": arch.size,
                                 "num_inference_steps": args.steps or arch.steps,
                                 "guidance_scale": arch.guidance, "output_type": "pt"}

    def call() -> Any:
        with torch.inference_mode():
            images = pipe(**call_args, generator=generator.manual_seed(SEED)).images
        return to_pixels(torch, images)

    return call, lambda: (None, "")


def adapter_call(torch: Any, arch: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    from adapters.stable_diffusion.acceleration import CompileOptions
    from adapters.stable_diffusion.limits import SdLimits
    from adapters.stable_diffusion.model import StableDiffusionModel
    from domain.execution import DetachedContext

    compiling = args.variant.startswith("compile") or args.variant == "fbcache"
    options: CompileOptions | bool = False
    if compiling:
        options = CompileOptions(
            mode="reduce-overhead" if args.variant == "compile-cudagraphs" else "default",
            backend="inductor" if args.device == "cuda" else "eager",
            cache_dir=Path(args.cache), tuned=args.variant == "compile-tuned",
            vae=args.variant == "compile-tuned")
    model = StableDiffusionModel(
        args.weights, device=args.device, compile=options, sizes=[(arch.size, arch.size)],
        limits=SdLimits(max_outputs=1), fuse_qkv=args.variant == "compile-tuned",
        first_block_cache=0.1 if args.variant == "fbcache" else 0.0)
    model.load()
    job: dict[str, Any] = {"prompt": PROMPT, "width": arch.size, "height": arch.size,
                           "num_inference_steps": args.steps or arch.steps,
                           "guidance_scale": arch.guidance, "seed": SEED}
    if arch.scheduler:
        job["scheduler"] = arch.scheduler
    pixels: list[Any] = []

    def call() -> Any:
        # run() returns artifacts whose PNG is made when first read (on the worker's store
        # thread): the pixels are taken from the artifact's pending render, not encoded here.
        work = model.run(job, DetachedContext("bench"))
        pixels[:] = [item["image"]._render.pixels for item in work]
        return pixels

    def describe() -> tuple[str | None, str]:
        attention = model.setup.attention.describe() if model.setup.attention else None
        note = ""
        if model.compilation is not None and not model.compilation.active:
            note = f"compile fell back to eager: {model.compilation.failure}"
        return attention, note

    return call, describe


def sync(torch: Any, cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def png_ms(pixels: list[Any]) -> float:
    from adapters.stable_diffusion.output_images import encode_png

    started = time.perf_counter()
    for image in pixels:
        encode_png(image)
    return (time.perf_counter() - started) * 1000 / max(1, len(pixels))


def compile_counters() -> dict[str, Any]:
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return {}
    wanted = {"stats": ("unique_graphs", "calls_captured"),
              "inductor": ("fxgraph_cache_hit", "fxgraph_cache_miss", "fxgraph_cache_bypass")}
    found = {f"{group}.{name}": int(counters[group][name])
             for group, names in wanted.items() for name in names if counters[group][name]}
    recompiles = sum(counters["recompiles"].values()) if "recompiles" in counters else 0
    return {**found, "recompiles": recompiles} if found or recompiles else found


# --- the parent: plan, processes, deadline ------------------------------------------------

def parse_plan(text: str) -> list[tuple[str, str]]:
    from bench.architectures import ARCHS

    plan = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        arch, _, variants = part.partition(":")
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r}: {', '.join(ARCHS)}")
        for variant in filter(None, (v.strip() for v in variants.split(","))):
            if variant not in VARIANTS:
                raise ValueError(f"unknown variant {variant!r}: {', '.join(VARIANTS)}")
            plan.append((arch, variant))
    return plan


def run_process(command: list[str], deadline: float) -> tuple[int, list[str]]:
    """Run ``command`` in its own process group until ``deadline`` (monotonic): (exit, lines)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH", ""), str(ROOT)) if p))
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        output, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
        lines = output.splitlines()
        return process.returncode, lines
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return 124, (output or "").splitlines()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--plan", default=None, help=f"default on CUDA: {GPU_PLAN}")
    parser.add_argument("--runs", type=int, default=None, help="timed calls (default 10)")
    parser.add_argument("--steps", type=int, default=None, help="override the arch's steps")
    parser.add_argument("--json", type=Path, default=None, help="rewritten after each variant")
    parser.add_argument("--deadline-s", type=float, default=420.0)
    for hidden in ("--arch", "--weights", "--cache", "--device", "--pixels", "--variant"):
        parser.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spawned-at", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build:
        import torch

        from bench.architectures import ARCHS, build

        build(ARCHS[args.arch], Path(args.weights), torch, args.device)
        return 0
    if args.variant is not None:
        return child(args)
    try:
        import torch
    except ImportError:
        print("torch is not installed: pip install 'podworker[sd]'", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available()
    mode = "gpu" if cuda else "smoke"
    device = "cuda" if cuda else "cpu"
    runs = args.runs or (10 if cuda else 1)
    if cuda and runs < 10:
        parser.error("--runs: at least 10 on a GPU (the median of fewer is not a figure)")
    plan = parse_plan(args.plan or (GPU_PLAN if cuda else SMOKE_PLAN))
    steps = args.steps or (None if cuda else 2)
    deadline = time.monotonic() + args.deadline_s
    header = {"mode": mode, "date": time.strftime("%Y-%m-%d", time.gmtime()),
              "gpu": torch.cuda.get_device_name(0) if cuda else "none (CPU smoke run)",
              "torch": torch.__version__, "runs": runs, "seed": SEED}
    print(json.dumps(header), flush=True)
    if not cuda:
        print("no CUDA device: the tiny pipeline on the CPU, to run the machinery; no figures")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sd-gpu-bench-") as tmp:
        work = Path(tmp)
        built: dict[str, str] = {}
        for arch, variant in plan:
            row = Row(arch, variant)
            rows.append(row)
            if time.monotonic() > deadline - 5:
                row.note = "skipped: out of time (--deadline-s)"
                continue
            if arch not in built:
                weights = work / arch
                code, lines = run_process(
                    [sys.executable, "-m", "bench.sd_gpu", "--build", "--arch", arch,
                     "--weights", str(weights), "--device", device], deadline)
                if code != 0:
                    row.note = ("skipped: out of time (--deadline-s) while building"
                                if code == 124 else
                                f"failed: build exit {code}: {(lines or [''])[-1][:200]}")
                    print("\n".join(lines[-20:]), flush=True)
                    continue
                built[arch] = str(weights)
            cache = work / f"cache-{arch}-{'compile' if variant == 'compile-warm' else variant}"
            command = [sys.executable, "-m", "bench.sd_gpu", "--arch", arch, "--variant",
                       variant, "--weights", built[arch], "--cache", str(cache), "--device",
                       device, "--runs", str(runs), "--pixels", str(work / f"{arch}-{variant}.npy"),
                       "--spawned-at", str(time.time())]
            if steps:
                command += ["--steps", str(steps)]
            code, lines = run_process(command, deadline)
            reported = [line[4:] for line in lines if line.startswith("ROW ")]
            if reported:
                rows[-1] = row = Row(**json.loads(reported[-1]))
            if code != 0:
                tail = next((ln for ln in reversed(lines) if ln.strip()), "")
                row.note = ("killed: out of time (--deadline-s)" if code == 124
                            else f"failed (exit {code}): {tail[:200]}")
                print("\n".join(lines[-30:]), flush=True)
            finish(rows, work)
            print(line_of(row), flush=True)
            write(args.json, header, rows)
        finish(rows, work)
    write(args.json, header, rows)
    print("\n".join(line_of(r) for r in rows))
    if any(row.note.startswith("failed") for row in rows):
        return 1
    return 3 if any("out of time" in row.note for row in rows) else 0


def finish(rows: list[Row], work: Path) -> None:
    """Ratios to the arch's ``plain``, and PSNR against its ``eager`` image (the gate)."""
    for row in rows:
        base = next((r.images_per_s for r in rows
                     if r.arch == row.arch and r.variant == "plain"), None)
        if base and row.images_per_s:
            row.ratio_to_plain = round(row.images_per_s / base, 3)
        row.psnr_vs_eager_db = psnr(work / f"{row.arch}-{row.variant}.npy",
                                    work / f"{row.arch}-eager.npy")
        if row.variant == "fbcache" and row.psnr_vs_eager_db is not None:
            passed = row.psnr_vs_eager_db >= GATE_PSNR_DB
            gate = f"similarity gate {'passed' if passed else 'FAILED'} (>= {GATE_PSNR_DB} dB)"
            if gate not in row.note:
                row.note = f"{row.note}; {gate}".strip("; ")


def psnr(one: Path, two: Path) -> float | None:
    if not (one.is_file() and two.is_file()) or one == two:
        return None
    import numpy as np

    a, b = np.load(one).astype(float), np.load(two).astype(float)
    if a.shape != b.shape:
        return None
    error = float(((a - b) ** 2).mean())
    return 99.0 if error == 0 else round(10 * float(np.log10(255.0**2 / error)), 2)


def line_of(row: Row) -> str:
    def num(value: float | None, fmt: str) -> str:
        return format(value, fmt) if value is not None else "-"

    return (f"{row.arch:<12} {row.variant:<18} cold {num(row.cold_start_s, '6.1f')} s  load "
            f"{num(row.load_s, '6.1f')} s  first {num(row.first_job_s, '6.2f')} s  median "
            f"{num(row.median_s, '6.3f')} s  {num(row.images_per_s, '6.2f')} img/s  x"
            f"{num(row.ratio_to_plain, '4.2f')}  psnr {num(row.psnr_vs_eager_db, '5.1f')}  "
            f"attn {row.attention or '-'}  {row.note}")


def write(path: Path | None, header: dict[str, Any], rows: list[Row]) -> None:
    if path is not None:
        path.write_text(json.dumps({**header, "rows": [asdict(r) for r in rows]}, indent=2)
                        + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
