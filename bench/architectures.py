"""The pipelines the GPU benchmark times: full-size architectures with random weights, no download.

Each has its model's real shapes (so the same compute as the real weights) and the tiny
pipeline's tokenizers (prompts are tokenised to the same lengths): SD 1.5 (UNet 860M), SDXL
(UNet 2.57B, CLIP ViT-L and OpenCLIP ViT-bigG text encoders), FLUX.1-schnell (transformer 11.9B,
CLIP ViT-L and a T5-XXL encoder of 4.76B). ``tiny`` is the adapter's tiny pipeline, for running
the benchmark's machinery on a CPU. Weights are made on ``device`` (``"meta"`` makes no memory:
what the unit test counts), cast to the family's dtype, and saved as a diffusers folder.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Arch:
    name: str
    size: int  # width = height, pixels
    steps: int
    guidance: float
    scheduler: str | None  # the job's scheduler (None: the family's only one)
    dtype: str  # weights on the GPU: float16 or bfloat16


ARCHS = {
    "sd15": Arch("sd15", 512, 25, 7.5, "PNDM", "float16"),
    "sdxl": Arch("sdxl", 1024, 30, 5.0, "EULER", "float16"),
    "flux-schnell": Arch("flux-schnell", 1024, 4, 0.0, None, "bfloat16"),
    "tiny": Arch("tiny", 64, 2, 7.5, "PNDM", "float16"),
}


def libraries() -> tuple[Any, Any]:
    return importlib.import_module("diffusers"), importlib.import_module("transformers")


def clip_text(transformers: Any, tokenizer: Any, *, width: int, layers: int, heads: int,
              projection: bool, act: str = "quick_gelu") -> Any:
    config = transformers.CLIPTextConfig(
        vocab_size=49408, hidden_size=width, intermediate_size=4 * width,
        num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
        hidden_act=act, projection_dim=width, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    kind = transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel
    return kind(config)


def sd_vae(diffusers: Any, *, latent_channels: int, scaling_factor: float,
           shift_factor: float | None = None, force_upcast: bool = True,
           quant_conv: bool = True) -> Any:
    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, norm_num_groups=32,
        sample_size=1024, scaling_factor=scaling_factor, shift_factor=shift_factor,
        force_upcast=force_upcast, use_quant_conv=quant_conv, use_post_quant_conv=quant_conv)


def sdxl_parts(tokenizer: Any) -> dict[str, Any]:
    """SDXL base 1.0's modules (its published configs), random weights."""
    diffusers, transformers = libraries()
    unet = diffusers.UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
        cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
        norm_num_groups=32)
    return {
        "unet": unet,
        "vae": sd_vae(diffusers, latent_channels=4, scaling_factor=0.13025),
        "text_encoder": clip_text(transformers, tokenizer, width=768, layers=12, heads=12,
                                  projection=False),
        "text_encoder_2": clip_text(transformers, tokenizer, width=1280, layers=32, heads=20,
                                    projection=True, act="gelu"),
    }


def flux_schnell_parts(tokenizer: Any, t5_tokenizer: Any) -> dict[str, Any]:
    """FLUX.1-schnell's modules (its published configs), random weights."""
    diffusers, transformers = libraries()
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
        attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
        pooled_projection_dim=768, guidance_embeds=False, axes_dims_rope=(16, 56, 56))
    t5 = transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
        feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
        pad_token_id=t5_tokenizer.pad_token_id, eos_token_id=t5_tokenizer.eos_token_id))
    return {
        "transformer": transformer,
        "vae": sd_vae(diffusers, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159,
                      force_upcast=False, quant_conv=False),
        "text_encoder": clip_text(transformers, tokenizer, width=768, layers=12, heads=12,
                                  projection=False),
        "text_encoder_2": t5,
    }


def build(arch: Arch, target: Path, torch: Any, device: str) -> Path:
    """Save ``arch``'s pipeline with random weights into ``target`` (made on ``device``)."""
    diffusers, _ = libraries()
    if arch.name == "tiny":
        from adapters.stable_diffusion.tiny import make_tiny_model

        return make_tiny_model(target)
    if arch.name == "sd15":
        from bench.sd15 import build_sd15

        return build_sd15(target, torch)
    from adapters.stable_diffusion.tiny.parts import make_clip_tokenizer, make_t5_tokenizer

    tokenizer = make_clip_tokenizer(target.parent / f"{arch.name}-tokenizer")
    dtype = getattr(torch, arch.dtype)
    with torch.device(device):
        if arch.name == "sdxl":
            parts = sdxl_parts(tokenizer)
        else:
            t5_tokenizer = make_t5_tokenizer()
            parts = flux_schnell_parts(tokenizer, t5_tokenizer)
    for module in parts.values():
        module.to(dtype=dtype).eval()
    if arch.name == "sdxl":
        pipe = diffusers.StableDiffusionXLPipeline(
            tokenizer=tokenizer, tokenizer_2=tokenizer, force_zeros_for_empty_prompt=True,
            scheduler=diffusers.EulerDiscreteScheduler(
                num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"),
            **parts)
    else:
        pipe = diffusers.FluxPipeline(
            tokenizer=tokenizer, tokenizer_2=t5_tokenizer,
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(
                shift=1.0, use_dynamic_shifting=False, base_shift=0.5, max_shift=1.15,
                base_image_seq_len=256, max_image_seq_len=4096),
            **parts)
    pipe.save_pretrained(str(target))
    return target


def parameter_counts(parts: dict[str, Any]) -> dict[str, int]:
    return {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
