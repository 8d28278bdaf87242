"""Tiny LoRAs for the tiny pipelines: random, saved as safetensors in diffusers' PEFT format.

:func:`make_tiny_lora` adds a PEFT ``LoraConfig`` to a fresh copy of a tiny pipeline's denoiser
(UNet or transformer; optionally its first text encoder too) with random A and B matrices
(``init_lora_weights=False``: PEFT's default makes B zero, a LoRA that changes nothing), and
saves it with the family's own ``save_lora_weights``, as a trainer would. The same seed gives the
same file. ``tiny_lora`` (session) builds each (family, seed, rank, text encoder) once.

:func:`lora_server` serves bytes over HTTP on loopback for the URL tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
CLIP_ATTENTION = ["q_proj", "k_proj", "v_proj", "out_proj"]


GAIN = {"flux": 8.0, "flux-schnell": 8.0}
"""How much stronger a family's tiny LoRA is made (B scaled), so that it visibly changes the
tiny Flux's images too."""


def make_tiny_lora(pipeline_dir: Path, target: Path, *, seed: int, rank: int = 4,
                   text_encoder: bool = False, gain: float = 1.0) -> Path:
    """Write a random LoRA for the pipeline at ``pipeline_dir`` to ``target`` (a
    ``.safetensors`` file), its B matrices times ``gain``; returns ``target``."""
    import diffusers
    import torch
    import transformers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    index = json.loads((pipeline_dir / "model_index.json").read_text())
    pipeline_class: Any = getattr(diffusers, index["_class_name"])
    denoiser = "unet" if "unet" in index else "transformer"
    layers: dict[str, Any] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module_class = getattr(diffusers, index[denoiser][1])
        model = module_class.from_pretrained(str(pipeline_dir / denoiser))
        model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=ATTENTION,
                                     init_lora_weights=False))
        layers[f"{denoiser}_lora_layers"] = {
            key: value * gain if "lora_B" in key else value
            for key, value in get_peft_model_state_dict(model).items()}
        if text_encoder:
            encoder_class = getattr(transformers, index["text_encoder"][1])
            encoder = encoder_class.from_pretrained(str(pipeline_dir / "text_encoder"))
            config = LoraConfig(r=rank, lora_alpha=rank, target_modules=CLIP_ATTENTION,
                                init_lora_weights=False)
            # peft itself, not transformers' add_adapter (which wants a newer peft)
            encoder = inject_adapter_in_model(config, encoder, "default")
            layers["text_encoder_lora_layers"] = get_peft_model_state_dict(encoder)
    target.parent.mkdir(parents=True, exist_ok=True)
    pipeline_class.save_lora_weights(str(target.parent), weight_name=target.name, **layers)
    return target


@pytest.fixture(scope="session")
def tiny_lora(
    tmp_path_factory: pytest.TempPathFactory, tiny_family_path: Callable[[str], Path]
) -> Callable[..., Path]:
    """``tiny_lora(family, seed=1, rank=4, text_encoder=False)``: the path of a tiny LoRA for
    that family's tiny pipeline, built at most once per session."""
    pytest.importorskip("peft")
    folder = tmp_path_factory.mktemp("tiny-loras")
    built: dict[tuple[str, int, int, bool], Path] = {}

    def lora_of(family: str, seed: int = 1, rank: int = 4, text_encoder: bool = False) -> Path:
        key = (family, seed, rank, text_encoder)
        if key not in built:
            name = f"{family}-s{seed}-r{rank}{'-te' if text_encoder else ''}.safetensors"
            built[key] = make_tiny_lora(tiny_family_path(family), folder / name, seed=seed,
                                        rank=rank, text_encoder=text_encoder,
                                        gain=GAIN.get(family, 1.0))
        return built[key]

    return lora_of
