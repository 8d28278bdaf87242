"""Bring-your-own weights: where the base model's weights are looked for, and LoRAs per job.

``app.settings.Settings`` inherits these (one flat set of environment variables; the README's
table lists them all). The defaults follow what Stable Diffusion users do: a LoRA folder on a
network volume, RunPod's model cache under ``/runpod-volume/huggingface-cache/hub``, no URL
fetched unless asked for.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

RUNPOD_MODEL_CACHE = "/runpod-volume/huggingface-cache/hub"
"""Where RunPod mounts the cached models it offers (the Hugging Face cache layout)."""


class WeightsSettings(BaseSettings):
    """Where weights come from: model caches, LoRA folder, LoRA URLs, and their bounds."""

    MODEL_CACHE_DIRS: str = Field(
        RUNPOD_MODEL_CACHE,
        description="Hugging Face hub caches (comma-separated) where a MODEL_PATH hub id is "
        "looked for, offline, before Hugging Face's own cache (HF_HOME); folders that do not "
        "exist are skipped.",
    )
    LORA_DIR: Path | None = Field(
        None,
        description="Folder of LoRA .safetensors files that jobs name (loras[].name, "
        "loras[].path, lora); unset: only URL LoRAs, when LORA_URL_FETCH is on.",
    )
    LORA_MAX_PER_JOB: int = Field(4, ge=1, le=16, description="Most LoRAs one job may apply.")
    LORA_CACHE_MAX: int = Field(
        8, ge=1, le=256,
        description="LoRAs kept loaded in memory, least recently used dropped first (at least "
        "LORA_MAX_PER_JOB).",
    )
    LORA_MAX_BYTES: int = Field(
        1_000_000_000, gt=0, description="Largest LoRA file, in LORA_DIR or at a URL (bytes)."
    )
    LORA_MAX_RANK: int = Field(
        128, ge=1, description="Highest LoRA rank accepted (read from the file's header)."
    )
    LORA_URL_FETCH: bool = Field(
        False,
        description="Let jobs give LoRAs as http(s) URLs, fetched behind the same SSRF guard as "
        "input images (INPUT_URL_ALLOW_PRIVATE) and kept on disk by content hash.",
    )
    LORA_URL_TIMEOUT: int = Field(
        300_000, gt=0, description="Whole time to fetch one LoRA URL, redirects included (ms)."
    )

    @field_validator("LORA_DIR", mode="before")
    @classmethod
    def _blank_dir_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def model_cache_dirs(self) -> tuple[Path, ...]:
        """MODEL_CACHE_DIRS as paths, in order, blanks dropped."""
        return tuple(Path(part.strip()).expanduser()
                     for part in self.MODEL_CACHE_DIRS.split(",") if part.strip())
