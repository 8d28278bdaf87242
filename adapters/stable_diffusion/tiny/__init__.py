"""A tiny Stable Diffusion pipeline with random weights, built offline, for local runs and CI.

Why it exists: real weights are gigabytes and need a download; a fresh CPU machine with no
network should still run the real diffusers code end to end and get real PNG files. The tiny
pipeline has the real architecture (UNet with cross-attention, a VAE that downsamples 8 times,
a CLIP text encoder and a CLIP BPE tokenizer, SD's noise schedule) at a few channels wide, so
it is loaded by exactly the same ``StableDiffusionPipeline.from_pretrained`` call as real
weights. Its images are noise-like patterns, not pictures.

What :func:`make_tiny_model` promises:

- no network: the tokenizer's ``vocab.json`` and ``merges.txt`` are written here, from a small
  built-in word list; every module is made from a config with seeded random weights;
- the same files every time (weights seeded with a fixed seed, the global RNG left untouched);
- idempotent and safe to race: a folder already holding a pipeline is returned as it is, and a
  new one is built in a temporary folder beside it and renamed into place, so another process
  never sees a half-written pipeline;
- small and fast: about 4 MB on disk; a 64x64 image in 3 steps takes about 0.05 s on a
  2-core CPU once warm.

Other families (``family="sdxl"``, ``"sd3"``, ``"flux"``, ``"flux-schnell"``, and SDXL's
refiner, ``"sdxl-refiner"``) are built the same way, with the same promises, by
:mod:`.families`: 1.3 to 6.3 MB each, sharing :mod:`.parts` (the CLIP tokenizer, CLIP config
and VAE shape) with :mod:`.sd1`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

TINY_SEED = 20221212

FAMILIES = ("sd", "sdxl", "sd3", "flux", "flux-schnell", "sdxl-refiner")
"""Families a tiny pipeline can be built for: SD 1.x in :mod:`.sd1`, the others in
:mod:`.families`."""


def make_tiny_model(directory: Path, family: str = "sd") -> Path:
    """Build the tiny pipeline of ``family`` into ``directory`` (unless it holds one already).

    Returns ``directory``. Raises ``FileExistsError`` when ``directory`` exists, is not empty
    and holds no pipeline (nothing of the caller's is ever overwritten), and ``ValueError`` for
    a family not in :data:`FAMILIES`. A folder that already holds a pipeline is returned as it
    is, whatever its family.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}: choose one of {', '.join(FAMILIES)}")
    directory = Path(directory)
    if (directory / "model_index.json").is_file():
        return directory
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(
            f"{directory} is not empty and holds no pipeline (no model_index.json); "
            "choose an empty or new folder for the tiny model"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.building-", dir=directory.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the pipeline may be read by another user
    try:
        _build(staging, family)
        try:
            # rename(2) replaces an empty folder atomically and fails on a non-empty one.
            os.replace(staging, directory)
        except OSError:
            if not (directory / "model_index.json").is_file():
                raise
            # Another process finished first: its pipeline is the same, keep it.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _build(target: Path, family: str) -> None:
    import torch

    from adapters.stable_diffusion.loading import quiet_progress_bars
    from adapters.stable_diffusion.tiny import families, sd1
    from adapters.stable_diffusion.tiny.parts import make_clip_tokenizer

    quiet_progress_bars()

    token_dir = target / "_tokenizer_source"
    tokenizer = make_clip_tokenizer(token_dir)
    shutil.rmtree(token_dir)
    builders = {
        "sd": sd1.build_sd,
        "sdxl": families.build_sdxl,
        "sd3": families.build_sd3,
        "flux": families.build_flux,
        "flux-schnell": families.build_flux_schnell,
        "sdxl-refiner": families.build_sdxl_refiner,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        pipeline = builders[family](tokenizer)
    for name in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(pipeline, name, None)
        if module is not None:
            module.eval()
    pipeline.save_pretrained(str(target))
