"""Tiny SDXL (and refiner), SD3 and Flux (dev, schnell) pipelines, random weights.

Each has its family's real architecture and components, a few channels wide, so it is saved by
``save_pretrained`` and loaded back by the family's own ``from_pretrained`` exactly as real
weights are:

============  =========================================  ==========================================
family        text encoders (tokenizers)                  denoiser, VAE, scheduler
============  =========================================  ==========================================
sdxl          CLIP + CLIP with projection (two CLIP BPE)  UNet with ``text_time`` conditioning,
                                                          8x VAE, Euler (SDXL's own config)
sdxl-refiner  CLIP with projection (CLIP BPE): SDXL's     UNet on the second encoder and an
              second encoder, no first one                aesthetic score, as SDXL's (Img2Img)
sd3           CLIP with projection x2 + T5 encoder (CLIP  SD3 MMDiT transformer (patch 2), 8x VAE
              BPE x2, a T5 unigram tokenizer)             with SD3's shift/scale, flow-match Euler
flux          CLIP + T5 encoder (CLIP BPE, T5 unigram)    Flux transformer with guidance embedding
                                                          (as Flux dev), 8x VAE, flow-match Euler
                                                          with dynamic shifting (Flux dev's)
flux-schnell  as flux                                     Flux transformer with no guidance
                                                          embedding (as FLUX.1-schnell), 8x VAE,
                                                          flow-match Euler, shift 1 (schnell's)
============  =========================================  ==========================================

The VAEs keep the real factor of 8 (four blocks), so sizes mean what they mean with real
weights: multiples of 8 (16 for Flux, whose latents are packed 2x2). The T5 tokenizer is a
unigram vocabulary built from :data:`.parts.CORPUS` (no sentencepiece file, no network).
Callers seed the random generator; these functions only build modules.
"""


from __future__ import annotations

from typing import Any

from adapters.stable_diffusion.tiny.parts import (
    CLIP_WIDTH,
    T5_WIDTH,
    clip_config,
    libraries,
    make_t5_tokenizer,
    t5_encoder,
    tiny_vae,
)

FLOW_MATCH_SHIFT = 3.0  # SD3's and Flux dev's scheduler shift


def build_sdxl(tokenizer: Any) -> Any:
    """An ``StableDiffusionXLPipeline``; ``tokenizer`` is the CLIP tokenizer of :mod:`.parts`."""
    diffusers, transformers = libraries()
    time_embed = 8  # SDXL's add_time_ids: 6 numbers (sizes and crop), each embedded this wide
    unet = diffusers.UNet2DConditionModel(
        sample_size=16,  # 128 px / 8
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(4, 8),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * time_embed + CLIP_WIDTH,
        cross_attention_dim=2 * CLIP_WIDTH,  # both encoders' hidden states side by side
        norm_num_groups=8,
    )
    return diffusers.StableDiffusionXLPipeline(
        vae=tiny_vae(diffusers, scaling_factor=0.13025),
        text_encoder=transformers.CLIPTextModel(clip_config(transformers, tokenizer)),
        text_encoder_2=transformers.CLIPTextModelWithProjection(
            clip_config(transformers, tokenizer)
        ),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=diffusers.EulerDiscreteScheduler(
            num_train_timesteps=1000,
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        ),
        force_zeros_for_empty_prompt=True,
    )


def build_sdxl_refiner(tokenizer: Any) -> Any:
    """A ``StableDiffusionXLImg2ImgPipeline`` shaped as SDXL's refiner: no first text encoder,
    a UNet conditioned on the second one only and on an aesthetic score (5 time ids, not 6),
    its VAE and second encoder the shapes of :func:`build_sdxl`'s, which it shares at load."""
    diffusers, transformers = libraries()
    time_embed = 8  # the refiner's add_time_ids: sizes, crop and aesthetic score, 5 numbers
    unet = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(4, 8), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=time_embed,
        projection_class_embeddings_input_dim=5 * time_embed + CLIP_WIDTH,
        cross_attention_dim=CLIP_WIDTH,  # the second encoder's hidden states only
        norm_num_groups=8,
    )
    return diffusers.StableDiffusionXLImg2ImgPipeline(
        vae=tiny_vae(diffusers, scaling_factor=0.13025),
        text_encoder=None,
        text_encoder_2=transformers.CLIPTextModelWithProjection(
            clip_config(transformers, tokenizer)
        ),
        tokenizer=None,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=diffusers.EulerDiscreteScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
            beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading",
        ),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )


def build_sd3(tokenizer: Any) -> Any:
    """A ``StableDiffusion3Pipeline`` (two CLIP encoders with projection and a T5 encoder)."""
    diffusers, transformers = libraries()
    transformer = diffusers.SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=T5_WIDTH,
        caption_projection_dim=32,
        pooled_projection_dim=2 * CLIP_WIDTH,  # both encoders' pooled outputs side by side
        pos_embed_max_size=64,  # positions for latents up to 128x128: images up to 1024 px
    )
    t5_tokenizer = make_t5_tokenizer()
    return diffusers.StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=FLOW_MATCH_SHIFT),
        vae=tiny_vae(diffusers, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=transformers.CLIPTextModelWithProjection(
            clip_config(transformers, tokenizer)
        ),
        tokenizer=tokenizer,
        text_encoder_2=transformers.CLIPTextModelWithProjection(
            clip_config(transformers, tokenizer)
        ),
        tokenizer_2=tokenizer,
        text_encoder_3=t5_encoder(transformers, t5_tokenizer),
        tokenizer_3=t5_tokenizer,
    )


def build_flux(tokenizer: Any, *, schnell: bool = False) -> Any:
    """A ``FluxPipeline`` (a CLIP and a T5 encoder), with guidance embedding like Flux dev, or
    without it and with schnell's scheduler (no dynamic shifting, shift 1) when ``schnell``."""
    diffusers, transformers = libraries()
    head = 16
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=head,
        num_attention_heads=2,
        joint_attention_dim=T5_WIDTH,
        pooled_projection_dim=CLIP_WIDTH,
        guidance_embeds=not schnell,  # what tells schnell from dev (families.detect_family)
        axes_dims_rope=(4, 4, 8),  # sums to the head width
    )
    t5_tokenizer = make_t5_tokenizer()
    return diffusers.FluxPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(
            shift=1.0 if schnell else FLOW_MATCH_SHIFT, use_dynamic_shifting=not schnell,
            base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
        ),
        vae=tiny_vae(diffusers, latent_channels=4, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=transformers.CLIPTextModel(clip_config(transformers, tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=t5_encoder(transformers, t5_tokenizer),
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )


def build_flux_schnell(tokenizer: Any) -> Any:
    """A ``FluxPipeline`` shaped as FLUX.1-schnell: :func:`build_flux` with ``schnell``."""
    return build_flux(tokenizer, schnell=True)
