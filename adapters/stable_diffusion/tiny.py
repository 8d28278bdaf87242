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

Other families (``family="sdxl"``, ``"sd3"``, ``"flux"``, ``"flux-schnell"``, and SDXL's refiner,
``"sdxl-refiner"``) are built the
same way, with the same promises, by :mod:`.tiny_families`: 1.3 to 6.3 MB each, sharing this
module's CLIP tokenizer, CLIP config and VAE shape.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

TINY_SEED = 20221212
MAX_POSITIONS = 77  # CLIP's context length; SD pipelines pad prompts to it
VOCAB_SIZE = 1000
CLIP_WIDTH = 32

# Words typical of prompts; frequent ones are listed more than once so BPE merges them whole.
_CORPUS = """
a a a a an the the the of of of in in on on with with and and and by at to
photo photo photo of a cat cat dog dog astronaut riding horse on mars portrait portrait
painting painting oil digital art art artstation trending detailed detailed highly
beautiful beautiful landscape landscape mountain mountains lake river sunset sunrise sky
city city street night night light lighting lights cinematic cinematic dramatic soft
render rendered unreal engine octane studio realistic realistic photorealistic 4k 8k hd
sharp focus focus illustration concept character fantasy science fiction futuristic
castle forest forest tree trees flower flowers garden water ocean sea beach snow winter
summer autumn spring red blue green yellow black white golden gold silver purple orange
woman man girl boy old young face eyes hair smiling standing sitting walking flying
style style by greg rutkowski artgerm wlop studio ghibli anime manga cartoon watercolor
sketch pencil drawing ink sculpture marble bronze glass metal wood stone house room
interior exterior building architecture temple tower bridge ship boat car train robot
dragon bird fish horse lion tiger wolf fox bear owl butterfly moon sun star stars cloud
clouds rain fog mist smoke fire ice blurry ugly deformed low quality bad anatomy extra
limbs worst quality jpeg artifacts watermark text signature cropped out of frame
"""


FAMILIES = ("sd", "sdxl", "sd3", "flux", "flux-schnell", "sdxl-refiner")
"""Families a tiny pipeline can be built for: SD 1.x here, the others in :mod:`.tiny_families`."""


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

    from adapters.stable_diffusion import tiny_families
    from adapters.stable_diffusion.model import quiet_progress_bars

    quiet_progress_bars()

    token_dir = target / "_tokenizer_source"
    tokenizer = make_clip_tokenizer(token_dir)
    shutil.rmtree(token_dir)
    builders = {
        "sd": _build_sd,
        "sdxl": tiny_families.build_sdxl,
        "sd3": tiny_families.build_sd3,
        "flux": tiny_families.build_flux,
        "flux-schnell": tiny_families.build_flux_schnell,
        "sdxl-refiner": tiny_families.build_sdxl_refiner,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        pipeline = builders[family](tokenizer)
    for name in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(pipeline, name, None)
        if module is not None:
            module.eval()
    pipeline.save_pretrained(str(target))


def _build_sd(tokenizer: Any) -> Any:
    """A ``StableDiffusionPipeline`` (SD 1.x's architecture); the caller seeds the generator."""
    # diffusers' and transformers' annotations are partial: use them as untyped libraries.
    diffusers: Any = importlib.import_module("diffusers")
    transformers: Any = importlib.import_module("transformers")
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,  # 64 px / the VAE's factor of 8
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = tiny_vae(diffusers, scaling_factor=0.18215, force_upcast=True)
    text_encoder = transformers.CLIPTextModel(clip_config(transformers, tokenizer))
    return sd1_pipeline(diffusers, unet=unet, vae=vae, text_encoder=text_encoder,
                        tokenizer=tokenizer)


def sd1_pipeline(diffusers: Any, *, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any) -> Any:
    """A ``StableDiffusionPipeline`` of these modules with SD 1.x's own PNDM scheduler
    configuration and no safety checker (the tiny pipeline and the benchmark's SD 1.5)."""
    scheduler = diffusers.PNDMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear", set_alpha_to_one=False, skip_prk_steps=True,
        steps_offset=1,
    )
    return diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def clip_config(transformers: Any, tokenizer: Any) -> Any:
    """A two-layer CLIP text encoder's config, 32 wide, for ``tokenizer``'s vocabulary."""
    vocab = tokenizer.get_vocab()
    return transformers.CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=CLIP_WIDTH,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_POSITIONS,
        projection_dim=CLIP_WIDTH,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )


def tiny_vae(diffusers: Any, *, latent_channels: int = 4, scaling_factor: float,
             shift_factor: float | None = None, force_upcast: bool = False) -> Any:
    """Four blocks, three downsamplings: the same factor of 8 as the real VAEs. With a
    ``shift_factor`` (SD3, Flux) it has no quant convs, as theirs."""
    flow = shift_factor is not None
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=not flow,
        use_post_quant_conv=not flow,
        force_upcast=force_upcast,
    )


def make_clip_tokenizer(work_dir: Path) -> Any:
    """A ``CLIPTokenizer`` loaded from ``vocab.json`` and ``merges.txt`` written into ``work_dir``.

    No network: the files come from :func:`_bpe_vocabulary`. ``model_max_length`` is CLIP's 77,
    so pipelines pad and truncate prompts exactly as with the real tokenizer.
    """
    transformers: Any = importlib.import_module("transformers")
    work_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = _bpe_vocabulary(VOCAB_SIZE)
    (work_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
    (work_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", "utf-8"
    )
    return transformers.CLIPTokenizer.from_pretrained(str(work_dir), model_max_length=MAX_POSITIONS)


def _bpe_vocabulary(size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style byte-level BPE vocabulary of at most ``size`` tokens, learnt from _CORPUS.

    Same layout as CLIP's: the 256 byte symbols, the same with ``</w>`` (end of word), one token
    per merge, then the two special tokens. Deterministic: ties go to the smallest pair.
    """
    symbols = list(_byte_symbols().values())
    vocab_list: list[str] = [*symbols, *(s + "</w>" for s in symbols)]
    budget = size - len(vocab_list) - 2
    words: Counter[tuple[str, ...]] = Counter(
        (*word[:-1], word[-1] + "</w>") for word in _CORPUS.lower().split()
    )
    merges: list[tuple[str, str]] = []
    while len(merges) < budget:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        vocab_list.append(best[0] + best[1])
        words = Counter({_merge(word, best): count for word, count in words.items()})
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(vocab_list)}, merges


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _byte_symbols() -> dict[int, str]:
    """GPT-2/CLIP's byte -> printable unicode symbol table."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(table.items()))


def tiny_model_summary(directory: Path) -> dict[str, Any]:
    """Files and total bytes of a built tiny pipeline (for logs and the README's figures)."""
    files = sorted(p for p in Path(directory).rglob("*") if p.is_file())
    return {
        "files": [str(p.relative_to(directory)) for p in files],
        "bytes": sum(p.stat().st_size for p in files),
    }
