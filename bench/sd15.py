"""Stable Diffusion 1.5's architecture with random weights, saved as a diffusers pipeline.

The same compute as the real model (UNet 860M, VAE 84M, CLIP ViT-L/14 text encoder 123M
parameters) and no download: what the GPU benchmark times. Weights are initialised on the GPU by
default (much faster); ``device="cpu"`` builds them on the host (the load-time benchmark on a
machine without one), ``dtype`` is what they are saved in.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any


def build_sd15(target: Path, torch: Any, *, device: str = "cuda", dtype: Any = None) -> Path:
    """Save a StableDiffusionPipeline with SD 1.5's architecture and random weights."""
    diffusers: Any = importlib.import_module("diffusers")
    transformers: Any = importlib.import_module("transformers")
    from adapters.stable_diffusion.tiny.parts import make_clip_tokenizer
    from adapters.stable_diffusion.tiny.sd1 import sd1_pipeline

    tokenizer = make_clip_tokenizer(target.parent / "tokenizer-source")
    with torch.device(device):  # initialising 1B parameters is much faster on the GPU
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
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
        module.eval()
        count = sum(p.numel() for p in module.parameters())
        print(f"  {name:<13} {count / 1e6:7.1f} M parameters")
    pipeline = sd1_pipeline(diffusers, unet=unet, vae=vae, text_encoder=text_encoder,
                            tokenizer=tokenizer)
    if dtype is not None:
        pipeline.to(dtype=dtype)
    pipeline.save_pretrained(str(target))
    return target
