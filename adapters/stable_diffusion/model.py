"""The Stable Diffusion model: a diffusers text-to-image pipeline behind the ``Model`` port.

Why it is built this way:

- **Loaded once.** :meth:`StableDiffusionModel.load` loads the pipeline a single time (the seed
  worker reloaded it for every job), with ``local_files_only`` unless downloads are allowed, so
  a pod with baked-in weights never touches the network.
- **Fast on CUDA.** fp16 weights, PyTorch's scaled-dot-product attention (diffusers'
  ``AttnProcessor2_0``, the default on torch 2; checked and set at load), a channels-last UNet,
  optionally ``torch.compile`` of the UNet, and a two-step warm-up at the default size so the
  first job pays no start-up cost. On CPU: fp32, and no warm-up (nothing to compile or tune).
- **Light to import.** torch, diffusers, transformers and Pillow are imported inside
  :meth:`load` and the functions it calls: importing this module costs nothing, so the worker
  pays for them only when this model is chosen.
- **Interruptible and observable.** Every denoising step calls ``ctx.check_cancelled()``
  (through diffusers' ``callback_on_step_end``), so a work timeout or a job-stop ends the job at
  the next step with ``ExecutionTimeout``/``JobCancelled``; and ``ctx.progress({"step": k,
  "of": n})`` with ``n`` the job's ``num_inference_steps`` (schedulers that evaluate the UNet
  more than once a step, such as HEUN, still count to ``n``).
- **Reproducible.** Image ``i`` of a job is drawn from its own CPU ``torch.Generator`` seeded
  ``seed + i`` (mod 2**32), so asking again for that seed with one output gives the same image
  (on the same device and dtype, up to batch-size rounding), and a seed means the same starting
  noise on a CPU and on a GPU. PNG bytes are deterministic (see :mod:`.images`).
- **GPU memory hygiene.** CUDA out-of-memory during a job raises ``OutOfMemory`` (a message
  suggesting fewer outputs or a smaller size) after the tensors of the failed job are released
  and the CUDA cache emptied; the worker stays up and the next job runs normally. Any other
  exception becomes ``ModelError("<class>: <message>")``, chained to the original.
- **Outputs are Artifacts.** ``run`` returns ``[{"image": Artifact(png), "seed": n}, ...]``; the
  worker's delivery stage stores them and puts references in their place. The model never
  uploads anything.

The safety checker is not loaded (``safety_checker=None``), like RunPod's templates: filtering
is the caller's business, and the checker costs memory and time on every image.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import math
import re
import secrets
from pathlib import Path
from typing import Any

from adapters.stable_diffusion.images import encode_png
from adapters.stable_diffusion.schedulers import (
    SCHEDULER_NAMES,
    scheduler_class,
    scheduler_class_name,
)
from adapters.stable_diffusion.schema import SEED_MAX, SdInput, SdLimits, parse_input
from domain.errors import InvalidInput, ModelError, OutOfMemory, PodworkerError
from domain.job import Artifact
from domain.ports import JobContext

WARMUP_STEPS = 2
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class StableDiffusionModel:
    """Text-to-image with a ``StableDiffusionPipeline``; conforms to ``domain.ports.Model``.

    ``model_path`` is a diffusers pipeline folder or a hub id found in the local cache.
    ``device`` is ``"auto"`` (CUDA when available, else CPU), ``"cuda"``, ``"cuda:N"`` or
    ``"cpu"``. ``compile`` applies ``torch.compile`` to the UNet on CUDA (slower start, faster
    steps; each new image size or batch size compiles again once). ``limits`` bound what one
    job may ask for.
    """

    def __init__(
        self,
        model_path: str | None,
        *,
        device: str = "auto",
        allow_download: bool = False,
        compile: bool = False,
        limits: SdLimits | None = None,
    ) -> None:
        self.model_path = model_path
        self.requested_device = device
        self.allow_download = allow_download
        self.compile = compile
        self.limits = limits or SdLimits()
        self.device: str | None = None  # the device in use, once loaded
        self._torch: Any = None
        self._pipe: Any = None
        self._schedulers: dict[str, Any] = {}
        self._unavailable: dict[str, str] = {}

    # --- the Model port ---------------------------------------------------------------------

    def load(self) -> None:
        """Load the pipeline and warm it up. A second call does nothing. Raises ``ModelError``."""
        if self._pipe is not None:
            return
        source = self._source()  # a missing folder is reported before seconds of imports
        torch, pipeline_class = _import_stack()
        device = _resolve_device(torch, self.requested_device)
        on_cuda = device.startswith("cuda")
        quiet_progress_bars()
        try:
            pipe = pipeline_class.from_pretrained(
                source,
                **dtype_argument(torch.float16 if on_cuda else torch.float32),
                local_files_only=not self.allow_download,
                safety_checker=None,
                requires_safety_checker=False,
            )
        except Exception as exc:
            raise ModelError(self._load_failure(source, exc)) from exc
        if not all(hasattr(pipe, part) for part in ("unet", "vae", "text_encoder", "scheduler")):
            raise ModelError(f"{source!r} is not a Stable Diffusion pipeline")
        pipe.set_progress_bar_config(disable=True)
        try:
            pipe = pipe.to(device)
            if on_cuda:
                _speed_up(torch, pipe, compile_unet=self.compile)
        except Exception as exc:
            error = OutOfMemory if _is_out_of_memory(torch, exc) else ModelError
            raise error(f"could not move the pipeline to {device}: {_describe(exc)}") from exc
        self._torch = torch
        self._pipe = pipe
        self.device = device
        self._prepare_schedulers()
        if on_cuda:
            try:
                self._warm_up()
            except ModelError:
                self._pipe = None  # a later load() starts again rather than keep a broken pipe
                _free_memory(torch, on_cuda)
                raise

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        """Generate the images one job asks for; see the module docstring for what it promises.

        Raises ``InvalidInput``, ``ExecutionTimeout``/``JobCancelled`` (from ``ctx``),
        ``OutOfMemory``, or ``ModelError`` for anything else the pipeline raised.
        """
        params = parse_input(job_input, self.limits)
        self._require_loaded()
        reason = self._unavailable.get(params.scheduler)
        if reason is not None:
            available = ", ".join(n for n in SCHEDULER_NAMES if n not in self._unavailable)
            raise InvalidInput(
                f"invalid input: scheduler: {params.scheduler} is not available on this worker "
                f"({reason}); available: {available}"
            )
        ctx.check_cancelled()
        first = params.seed if params.seed is not None else secrets.randbelow(SEED_MAX + 1)
        seeds = [(first + i) % (SEED_MAX + 1) for i in range(params.num_outputs)]
        images = self._generate(params, seeds, _StepReporter(ctx, params.num_inference_steps))
        ctx.check_cancelled()
        return [
            {"image": Artifact(encode_png(image), "image/png", "png"), "seed": seed}
            for image, seed in zip(images, seeds, strict=True)
        ]

    # --- for tests and the benchmark --------------------------------------------------------

    @property
    def pipeline(self) -> Any:
        """The loaded diffusers pipeline. Raises ``ModelError`` before :meth:`load`."""
        self._require_loaded()
        return self._pipe

    # --- inside -----------------------------------------------------------------------------

    def _require_loaded(self) -> None:
        if self._pipe is None:
            raise ModelError("the Stable Diffusion model is not loaded (load() was not called)")

    def _source(self) -> str:
        raw = (self.model_path or "").strip()
        if not raw:
            raise ModelError(
                "no model path: give a diffusers pipeline folder (MODEL_PATH) or a hub id that "
                "is in the local cache"
            )
        path = Path(raw).expanduser()
        if path.exists():
            if not path.is_dir():
                raise ModelError(
                    f"model path {raw!r} is a file; a diffusers pipeline folder (with "
                    "model_index.json) is needed, single-file checkpoints are not supported"
                )
            if not (path / "model_index.json").is_file():
                raise ModelError(
                    f"model folder {raw!r} is not a diffusers pipeline (no model_index.json)"
                )
            return str(path)
        if _HUB_ID.match(raw) and not raw.startswith((".", "~")):
            return raw  # a hub id: found in the local cache, or downloaded when allowed
        raise ModelError(f"model folder {raw!r} not found")

    def _load_failure(self, source: str, exc: Exception) -> str:
        where = f"could not load a Stable Diffusion pipeline from {source!r}"
        if not Path(source).exists():
            if self.allow_download:
                where += " (not a local folder; the download failed)"
            else:
                where += (
                    " (not a local folder, not in the local Hugging Face cache, and downloads "
                    "are off: allow them with MODEL_ALLOW_DOWNLOAD=true)"
                )
        return f"{where}: {_describe(exc)}"

    def _prepare_schedulers(self) -> None:
        """One scheduler instance per whitelisted name, all from the pipeline's own config.

        Made once at load, so a job's scheduler swap is an attribute assignment. A scheduler
        whose extra dependency is missing (K-LMS needs scipy) is marked unavailable with the
        reason, and jobs asking for it get ``InvalidInput`` naming the ones that work.
        """
        base = self._pipe.scheduler.config
        for name in SCHEDULER_NAMES:
            cls = scheduler_class(name)
            try:
                self._schedulers[name] = cls.from_config(base)
            except ImportError:
                missing = [
                    b for b in getattr(cls, "_backends", []) if importlib.util.find_spec(b) is None
                ]
                needs = " and ".join(missing) or "a package that is not installed"
                self._unavailable[name] = f"{scheduler_class_name(name)} needs {needs}"

    def _warm_up(self) -> None:
        params = parse_input({"prompt": "warm-up", "num_inference_steps": WARMUP_STEPS})
        try:
            self._generate(params, [0], None)
        except PodworkerError as exc:
            raise ModelError(f"warm-up failed: {exc}") from exc

    def _generate(self, params: SdInput, seeds: list[int], on_step: _StepReporter | None) -> Any:
        """The PIL images for ``seeds`` (one image each). Raises as :meth:`run` says."""
        torch = self._torch
        pipe = self._pipe
        on_cuda = str(self.device).startswith("cuda")
        pipe.scheduler = self._schedulers[params.scheduler]
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
        try:
            with torch.inference_mode():
                result = pipe(
                    prompt=params.prompt,
                    negative_prompt=params.negative_prompt or None,
                    width=params.width,
                    height=params.height,
                    num_inference_steps=params.num_inference_steps,
                    guidance_scale=params.guidance_scale,
                    num_images_per_prompt=len(seeds),
                    generator=generators,
                    output_type="pil",
                    callback_on_step_end=on_step,
                    callback_on_step_end_tensor_inputs=[],
                )
            return result.images
        except PodworkerError:
            raise  # ExecutionTimeout / JobCancelled from the step callback, unchanged
        except Exception as exc:
            if not _is_out_of_memory(torch, exc):
                raise ModelError(_describe(exc)) from exc
            detail = _describe(exc)
        # Only out-of-memory gets here. The failed call's frames (and their tensors) were freed
        # when the except block ended; give their memory back before reporting.
        _free_memory(torch, on_cuda)
        raise OutOfMemory(
            f"out of memory on {self.device} making {len(seeds)} image(s) of "
            f"{params.width}x{params.height}: ask for fewer num_outputs or a smaller "
            f"width/height ({detail})"
        )


class _StepReporter:
    """diffusers' ``callback_on_step_end``: checks for cancellation, then reports the step."""

    def __init__(self, ctx: JobContext, steps: int) -> None:
        self.ctx = ctx
        self.steps = steps
        self.reported = 0

    def __call__(
        self, pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        self.ctx.check_cancelled()
        # Some schedulers evaluate the UNet more often than once a step (HEUN twice, PNDM once
        # more): map the evaluation index onto the 1..steps the job asked for.
        evaluations = max(int(getattr(pipe, "num_timesteps", 0) or 0), self.steps)
        step = min(self.steps, math.ceil((index + 1) * self.steps / evaluations))
        if step > self.reported:
            self.reported = step
            self.ctx.progress({"step": step, "of": self.steps})
        return {}


def _import_stack() -> tuple[Any, Any]:
    try:
        import torch
        from diffusers import StableDiffusionPipeline
    except ImportError as exc:
        raise ModelError(
            f"the Stable Diffusion model needs torch, diffusers and transformers ({exc}); "
            "install them with: pip install 'podworker[sd]'"
        ) from exc
    return torch, StableDiffusionPipeline


def dtype_argument(dtype: Any) -> dict[str, Any]:
    """``from_pretrained``'s dtype keyword: ``dtype`` since diffusers deprecated ``torch_dtype``
    (2026, diffusers PR 14205); older releases know only ``torch_dtype``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def _resolve_device(torch: Any, requested: str) -> str:
    wanted = requested.strip().lower()
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cpu":
        return "cpu"
    if re.fullmatch(r"cuda(:\d+)?", wanted):
        if not torch.cuda.is_available():
            raise ModelError(f"device {requested!r} asked for, but no CUDA device is available")
        return wanted
    raise ModelError(f"unknown device {requested!r}: use auto, cuda, cuda:N or cpu")


def _speed_up(torch: Any, pipe: Any, *, compile_unet: bool) -> None:
    """The CUDA fast path: SDPA attention, channels-last UNet, optionally a compiled UNet."""
    attention: Any = importlib.import_module("diffusers.models.attention_processor")
    sdpa = attention.AttnProcessor2_0
    for module in (pipe.unet, pipe.vae):
        processors = module.attn_processors.values()
        if not all(isinstance(p, sdpa) for p in processors):
            module.set_attn_processor(sdpa())
    pipe.unet.to(memory_format=torch.channels_last)
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet)


def quiet_progress_bars() -> None:
    """No tqdm bars from diffusers or transformers (loading, saving): the worker's logs are one
    JSON object a line. A process-wide switch of those two libraries, and nothing else."""
    for library in ("diffusers", "transformers"):
        logging: Any = importlib.import_module(f"{library}.utils.logging")
        logging.disable_progress_bar()


def _is_out_of_memory(torch: Any, exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def _free_memory(torch: Any, on_cuda: bool) -> None:
    gc.collect()
    if on_cuda:
        torch.cuda.empty_cache()


def _describe(exc: BaseException) -> str:
    """``Class: first line of the message``, at most 300 characters."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
