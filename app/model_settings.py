"""The model's settings: which model, its weights, Stable Diffusion's limits and speed-ups, how
many jobs at once, input images. ``app.settings.Settings`` inherits them (one flat set of
environment variables; the README's table lists them all)."""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
"""torch.compile's modes that SD_COMPILE_MODE offers."""

BUILT_IN_MODELS = ("stable_diffusion", "echo")
MODEL_ALIASES = {"sd": "stable_diffusion"}


class PipelineFamily(enum.StrEnum):
    """Which diffusers pipeline family the weights are (``auto``: read model_index.json).

    ``flux`` tells FLUX.1-schnell from dev by the transformer config; ``flux-schnell`` forces
    schnell's defaults whatever it says (and is the local run's tiny schnell pipeline)."""

    AUTO = "auto"
    SD = "sd"
    SDXL = "sdxl"
    SD3 = "sd3"
    FLUX = "flux"
    FLUX_SCHNELL = "flux-schnell"


class ModelSettings(BaseSettings):
    """The settings of the model and of what jobs may give it."""

    # --- model --------------------------------------------------------------------------
    MODEL: str = Field(
        "stable_diffusion",
        description="stable_diffusion, echo, or module:factory for your own model.",
    )
    MODEL_PATH: str | None = Field(
        None,
        description="Weights: a local folder (a network volume's too) or a hub id, found "
        "offline in MODEL_CACHE_DIRS or Hugging Face's cache (HF_HOME). Unset in a local run: a "
        "tiny random pipeline is built and used.",
    )
    MODEL_ALLOW_DOWNLOAD: bool = Field(
        False, description="Let diffusers download weights (off: local files only)."
    )
    MODEL_COMPILE: bool = Field(
        False,
        description="torch.compile the UNet, with every served shape compiled at load (falls "
        "back to uncompiled on any compile failure).",
    )
    MODEL_DEVICE: str = Field("auto", description="auto, cuda or cpu.")
    SD_MAX_PROMPT_CHARS: int = Field(
        2000, ge=1, description="Stable Diffusion: longest prompt accepted (characters)."
    )
    SD_MAX_PIXELS: int = Field(
        1024 * 1024,
        ge=512 * 512,
        description="Stable Diffusion: largest width x height accepted (pixels).",
    )
    SD_MAX_OUTPUTS: int = Field(4, ge=1, description="Stable Diffusion: most images per job.")
    SD_MAX_STEPS: int = Field(
        500, ge=25, description="Stable Diffusion: most denoising steps per job."
    )
    SD_PIPELINE: PipelineFamily = Field(
        PipelineFamily.AUTO,
        description="Stable Diffusion: pipeline family, auto (from the weights' "
        "model_index.json), sd, sdxl, sd3, flux (dev, or schnell when its transformer config "
        "says so) or flux-schnell (schnell whatever the transformer config says).",
    )
    SD_SIZES: str | None = Field(
        None,
        description="Stable Diffusion: the only sizes accepted, as WxH,WxH (compiled at load "
        "with MODEL_COMPILE); unset: any size, and only 512x512 is compiled.",
    )
    SD_COMPILE_MODE: CompileMode = Field("default", description="torch.compile mode: default, "
        "reduce-overhead or max-autotune (CUDA graphs), or max-autotune-no-cudagraphs.")
    SD_COMPILE_CACHE_DIR: str | None = Field(None, description="Stable Diffusion: folder "
        "of compiled graphs kept between starts (may be a network volume shared by pods of "
        "one image; entries are keyed by torch, Triton, GPU and model; a bad one is ignored); "
        "unset: STATE_DIR/compile-cache.")
    SD_COMPILE_TUNED: bool = Field(False, description="Stable Diffusion, with MODEL_COMPILE: "
        "fused QKV projections and the Inductor settings diffusers documents for speed.")
    SD_FIRST_BLOCK_CACHE: float = Field(0.0, ge=0.0, le=1.0, description="Flux: the lossy "
        "first-block cache's threshold (0: off; 0.05-0.2 trade detail for speed; images "
        "differ from uncached ones).")
    SD_PNG_COMPRESSION: int = Field(1, ge=0, le=9, description="Stable Diffusion: PNG zlib "
        "level (0-9; 1 is fast, 6 is zlib's default and ~4x slower for a few % fewer bytes).")
    SD_BATCH_MAX: int = Field(1, ge=1, le=64, description="Stable Diffusion: most images "
        "one pipeline call makes for jobs batched together (1: no batching); CONCURRENCY is "
        "raised to it.")
    SD_BATCH_WAIT_MS: int = Field(20, ge=0, le=10_000, description="Stable Diffusion: how "
        "long an idle GPU waits for jobs to batch with the first one (ms; with SD_BATCH_MAX).")
    SD_REFINER_PATH: str | None = Field(None, description="Stable Diffusion XL: a local "
        "folder of SDXL refiner weights (StableDiffusionXLImg2ImgPipeline); text-to-image jobs "
        "then refine by default (use_refiner). Only with an SDXL base.")
    ECHO_DELAY_MS: int = Field(0, ge=0, description="Echo model: time each job takes (ms).")
    ECHO_FAIL: bool = Field(False, description="Echo model: fail every job.")
    CONCURRENCY: int = Field(
        1, ge=1, le=1024,
        description="Jobs on the model at once (a model's own concurrency() overrides it).",
    )
    STREAM_AGGREGATE: bool = Field(
        False,
        description="A streaming model's final output is the list of its chunks (else empty).",
    )

    # --- input images ------------------------------------------------------------------
    INPUT_IMAGE_MAX_BYTES: int = Field(
        10_000_000, gt=0, description="Largest input image (init_image, mask) file (bytes)."
    )
    INPUT_IMAGE_MAX_PIXELS: int = Field(
        16_777_216,
        gt=0,
        description="Largest input image, width x height, checked before decoding (pixels).",
    )
    INPUT_URL_FETCH: bool = Field(
        False,
        description="Fetch input images given as http(s) URLs (off: base64 and data URLs only).",
    )
    INPUT_URL_TIMEOUT: int = Field(
        15_000, gt=0, description="Whole time to fetch one input image, redirects included (ms)."
    )
    INPUT_URL_ALLOW_PRIVATE: bool = Field(
        False,
        description="Let input URLs reach loopback, private, link-local and CGNAT addresses "
        "(cloud metadata addresses stay refused).",
    )

    @field_validator("MODEL")
    @classmethod
    def _model(cls, value: str) -> str:
        """The model, decided here once: a built-in name (its alias resolved) or module:factory."""
        name = value.strip()
        name = MODEL_ALIASES.get(name, name)
        if name not in BUILT_IN_MODELS and ":" not in name:
            raise ValueError(f"{value!r}: use stable_diffusion (or sd), echo, or module:factory")
        return name

    @property
    def slots(self) -> int:
        """Jobs on the model at once: CONCURRENCY, raised to SD_BATCH_MAX when Stable Diffusion
        batches (a batch is made of the jobs on the model at once)."""
        if self.MODEL != "stable_diffusion":
            return self.CONCURRENCY
        return max(self.CONCURRENCY, self.SD_BATCH_MAX)

    @property
    def sd_sizes(self) -> tuple[tuple[int, int], ...]:
        """SD_SIZES as (width, height) pairs; empty when unset."""
        return parse_sizes(self.SD_SIZES) if self.SD_SIZES else ()

    @field_validator("SD_SIZES")
    @classmethod
    def _sizes(cls, value: str | None) -> str | None:
        return None if value is None else ",".join(f"{w}x{h}" for w, h in parse_sizes(value))

    @field_validator("SD_REFINER_PATH", "SD_COMPILE_CACHE_DIR")
    @classmethod
    def _refiner_path(cls, value: str | None) -> str | None:
        return (value or "").strip() or None  # blank is unset


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``"512x512, 768X512"`` as ``((512, 512), (768, 512))``, repeats dropped; ``ValueError``
    naming the bad part unless each is WxH with sides multiples of 8, at least 64."""
    sizes: dict[tuple[int, int], None] = {}
    for part in text.replace(" ", "").lower().split(","):
        width, x, height = part.partition("x")
        if not (x and width.isdigit() and height.isdigit()):
            raise ValueError(f"{part!r} is not WxH (such as 512x512,768x512)")
        if int(width) % 8 or int(height) % 8 or min(int(width), int(height)) < 64:
            raise ValueError(f"{part}: sides must be multiples of 8, at least 64")
        sizes[int(width), int(height)] = None
    return tuple(sizes)
