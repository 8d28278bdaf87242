"""A tiny SD 1.x pipeline (``StableDiffusionPipeline``): UNet with cross-attention, an 8x VAE,
a CLIP text encoder and SD 1.x's PNDM schedule, a few channels wide. :func:`sd1_pipeline` is
also how the benchmark assembles SD 1.5's full-size architecture."""

from __future__ import annotations

from typing import Any

from adapters.stable_diffusion.tiny.parts import clip_config, libraries, tiny_vae


def build_sd(tokenizer: Any) -> Any:
    """A ``StableDiffusionPipeline`` (SD 1.x's architecture); the caller seeds the generator."""
    diffusers, transformers = libraries()
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
