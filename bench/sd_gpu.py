"""Images per second at 512x512, 25 steps: this adapter's CUDA path beside plain diffusers.

Usage (from the repository root, on a machine with a CUDA GPU)::

    python -m bench.sd_gpu [--batch 1] [--runs 3] [--compile]

It builds the full-size Stable Diffusion 1.5 architecture with random weights (UNet 860M, VAE
84M, CLIP ViT-L/14 text encoder 123M parameters: the same compute as the real model, no
download), saves it to a temporary folder, then times, one after the other:

1. ``plain diffusers``: ``StableDiffusionPipeline.from_pretrained(path).to("cuda")``, every
   default (fp32);
2. ``plain diffusers fp16``: the same with ``torch_dtype=float16``, the usual first recipe;
3. ``podworker adapter``: ``StableDiffusionModel(path, device="cuda").load()`` then ``run()``
   (fp16, SDPA, channels-last UNet, warm-up; with ``--compile`` also ``torch.compile``). Its
   times include PNG encoding, as a job's would.

Every variant uses the PNDM scheduler (the saved pipeline's default) and classifier-free
guidance 7.5, gets one untimed call first, and is timed over ``--runs`` calls. Exits with code 2
and a message when no CUDA device is present.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

SIZE = 512
STEPS = 25
GUIDANCE = 7.5
PROMPT = "a photo of an astronaut riding a horse on mars, highly detailed"


class _NoCancel:
    """A job context for the benchmark: never cancelled, progress dropped."""

    job_id = "bench"

    def check_cancelled(self) -> None:
        return None

    def progress(self, update: Any) -> None:
        return None


def build_sd15(target: Path, torch: Any) -> Path:
    """Save a StableDiffusionPipeline with SD 1.5's architecture and random weights."""
    diffusers: Any = importlib.import_module("diffusers")
    transformers: Any = importlib.import_module("transformers")
    from adapters.stable_diffusion.tiny import make_clip_tokenizer

    tokenizer = make_clip_tokenizer(target.parent / "tokenizer-source")
    with torch.device("cuda"):  # initialising 1B parameters is much faster on the GPU
        unet = diffusers.UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=(
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ),
            up_block_types=(
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ),
            cross_attention_dim=768,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        vae = diffusers.AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            norm_num_groups=32,
            sample_size=512,
        )
        text_encoder = transformers.CLIPTextModel(
            transformers.CLIPTextConfig(
                vocab_size=49408,
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=77,
                hidden_act="quick_gelu",
                projection_dim=768,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    scheduler = diffusers.PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
        module.eval()
        count = sum(p.numel() for p in module.parameters())
        print(f"  {name:<13} {count / 1e6:7.1f} M parameters")
    pipeline = diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(str(target))
    return target


def measure(torch: Any, label: str, call: Callable[[], object], images: int, runs: int) -> str:
    call()  # untimed: first-call costs (kernels, allocator, compilation) are not throughput
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(runs):
        call()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    rate = images * runs / elapsed
    peak = torch.cuda.max_memory_allocated() / 2**30
    return f"{label:<34} {rate:8.3f} images/s {elapsed / runs:8.3f} s/call {peak:8.2f} GiB peak"


def release(torch: Any) -> None:
    gc.collect()
    torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    parser.add_argument("--runs", type=int, default=3, help="timed calls per variant (default 3)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the UNet")
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:
        print("torch is not installed: pip install 'podworker[sd]'", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(
            "no CUDA device: this benchmark needs an NVIDIA GPU "
            "(torch.cuda.is_available() is False)",
            file=sys.stderr,
        )
        return 2

    diffusers: Any = importlib.import_module("diffusers")
    from adapters.stable_diffusion.model import (
        StableDiffusionModel,
        dtype_argument,
        quiet_progress_bars,
    )

    quiet_progress_bars()
    # Random weights overflow fp16 now and then: NaN pixels, harmless for timing, noisy in numpy.
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    print(
        f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, "
        f"diffusers {diffusers.__version__}"
    )
    print(
        f"{SIZE}x{SIZE}, {STEPS} steps, guidance {GUIDANCE}, batch {args.batch}, "
        f"{args.runs} timed calls per variant"
    )
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sd15-random-") as tmp:
        print("building SD 1.5 with random weights:")
        path = str(build_sd15(Path(tmp) / "sd15", torch))
        release(torch)

        def plain_call(pipe: Any) -> Callable[[], object]:
            return lambda: pipe(
                PROMPT,
                width=SIZE,
                height=SIZE,
                num_inference_steps=STEPS,
                guidance_scale=GUIDANCE,
                num_images_per_prompt=args.batch,
            )

        for label, extra in (
            ("plain diffusers (fp32 defaults)", {}),
            ("plain diffusers fp16", dtype_argument(torch.float16)),
        ):
            pipe = diffusers.StableDiffusionPipeline.from_pretrained(
                path, safety_checker=None, requires_safety_checker=False, **extra
            ).to("cuda")
            pipe.set_progress_bar_config(disable=True)
            rows.append(measure(torch, label, plain_call(pipe), args.batch, args.runs))
            print(rows[-1])
            del pipe
            release(torch)

        job = {
            "prompt": PROMPT,
            "width": SIZE,
            "height": SIZE,
            "num_inference_steps": STEPS,
            "guidance_scale": GUIDANCE,
            "num_outputs": args.batch,
            "scheduler": "PNDM",
            "seed": 1,
        }
        variants = [("podworker adapter", False)]
        if args.compile:
            variants.append(("podworker adapter + torch.compile", True))
        for label, compile_unet in variants:
            loading = time.perf_counter()
            model = StableDiffusionModel(path, device="cuda", compile=compile_unet)
            model.load()
            print(f"  ({label}: load and warm-up took {time.perf_counter() - loading:.1f} s)")
            run_job = functools.partial(model.run, job, _NoCancel())
            rows.append(measure(torch, label, run_job, args.batch, args.runs))
            print(rows[-1])
            del model, run_job
            release(torch)

    print("\nside by side:")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
