"""The Stable Diffusion model: a diffusers text-to-image pipeline behind the ``Model`` port.

Why it is built this way:

- **Loaded once, on the jobs' thread.** :meth:`StableDiffusionModel.load` loads the pipeline a
  single time, with ``local_files_only`` unless downloads are allowed, so a pod with baked-in
  weights never touches the network. The worker calls it on its model thread, the thread that
  then runs every job: cuDNN plans, cuBLAS handles and CUDA-graph trees are per thread, so the
  warm-up's work is the jobs' work.
- **Fast on CUDA.** fp16 weights, SDPA attention, channels-last UNet and VAE, optionally fused
  QKV projections and ``torch.compile`` made safe (see :mod:`.acceleration`: compile failures
  fall back to eager, every served shape is compiled at load, none during a job), and a warm-up
  at load. On CPU: fp32, and a warm-up only when compiling.
- **Sizes.** ``sizes`` (``SD_SIZES``), when given, are the only width x height a job may ask for
  (``InvalidInput`` otherwise) and the ones compiled at load.
- **Light to import.** torch, diffusers, transformers and Pillow are imported by :meth:`load`.
- **Interruptible and observable.** Every denoising step calls ``ctx.check_cancelled()``
  (through diffusers' ``callback_on_step_end``), so a work timeout or a job-stop ends the job at
  the next step with ``ExecutionTimeout``/``JobCancelled``; and ``ctx.progress({"step": k,
  "of": n})`` with ``n`` the job's ``num_inference_steps`` (schedulers that evaluate the UNet
  more than once a step, such as HEUN, still count to ``n``).
- **Reproducible.** Image ``i`` of a job is drawn from its own CPU ``torch.Generator`` seeded
  ``seed + i`` (mod 2**32), so asking again for that seed with one output gives the same image
  (same device and dtype, up to batch-size rounding). PNG bytes are deterministic.
- **Faults** (see :mod:`.faults`): out of memory (``*_ALLOC_FAILED`` included) fails the job
  with ``OutOfMemory`` after its tensors are released and the CUDA cache emptied; a dead CUDA
  context raises ``DeviceLost`` (the worker then drains and exits, code 6) and every later job
  gets it at once; anything else is ``ModelError("<class>: <message>")``. Errors are raised
  ``from None`` with the original's frames cleared, so no failed call's tensors stay alive.
- **Outputs are Artifacts.** ``run`` returns ``[{"image": Artifact, "seed": n}, ...]``: 8-bit
  pixels made on the device, PNG-encoded when the store stage reads them, on its own thread.

The safety checker is not loaded, like RunPod's templates: filtering is the caller's business.
"""

from __future__ import annotations

import contextlib
import gc
import secrets
from collections.abc import Sequence
from typing import Any

from adapters.stable_diffusion.acceleration import (
    Compilation,
    CompileOptions,
    speed_up,
    unet_graphs,
    warmup_plan,
)
from adapters.stable_diffusion.faults import describe, forget, job_error
from adapters.stable_diffusion.images import PNG_COMPRESS_LEVEL, png_artifact, to_pixels
from adapters.stable_diffusion.loading import (
    dtype_argument,
    import_stack,
    load_failure,
    pipeline_source,
    quiet_progress_bars,
    resolve_device,
)
from adapters.stable_diffusion.schedulers import SCHEDULER_NAMES, prepare_schedulers
from adapters.stable_diffusion.schema import DEFAULT_SIDE, SEED_MAX, SdInput, SdLimits, parse_input
from adapters.stable_diffusion.steps import StepReporter
from domain.errors import DeviceLost, InvalidInput, ModelError, OutOfMemory, PodworkerError
from domain.ports import JobContext

__all__ = ["CompileOptions", "StableDiffusionModel", "dtype_argument", "quiet_progress_bars"]

WARMUP_STEPS = 2


class StableDiffusionModel:
    """Text-to-image with a ``StableDiffusionPipeline``; conforms to ``domain.ports.Model``.

    ``model_path`` is a diffusers pipeline folder or a hub id found in the local cache.
    ``device`` is ``"auto"`` (CUDA when available, else CPU), ``"cuda"``, ``"cuda:N"`` or
    ``"cpu"``. ``compile`` is False, True (Inductor, default mode) or :class:`CompileOptions`.
    ``limits`` bound what one job may ask for; ``sizes`` restrict width x height (empty: any);
    ``png_compression`` is zlib's level (0-9); ``channels_last`` and ``fuse_qkv`` tune CUDA.
    """

    def __init__(
        self,
        model_path: str | None,
        *,
        device: str = "auto",
        allow_download: bool = False,
        compile: bool | CompileOptions = False,
        limits: SdLimits | None = None,
        sizes: Sequence[tuple[int, int]] = (),
        png_compression: int = PNG_COMPRESS_LEVEL,
        channels_last: bool = True,
        fuse_qkv: bool = False,
    ) -> None:
        self.model_path = model_path
        self.requested_device = device
        self.allow_download = allow_download
        options = CompileOptions() if compile is True else compile or None
        self.compile_options: CompileOptions | None = options
        self.limits = limits or SdLimits()
        self.sizes = tuple(sizes)
        self.png_compression = png_compression
        self.channels_last = channels_last
        self.fuse_qkv = fuse_qkv
        self.device: str | None = None  # the device in use, once loaded
        self.compilation: Compilation | None = None  # once loaded with compile on
        self._torch: Any = None
        self._pipe: Any = None
        self._schedulers: dict[str, Any] = {}
        self._unavailable: dict[str, str] = {}
        self._lost: str | None = None  # set once the device is lost: every job fails at once

    # --- the Model port ---------------------------------------------------------------------

    def load(self) -> None:
        """Load the pipeline and warm it up. A second call does nothing. Raises ``ModelError``."""
        if self._pipe is not None:
            return
        source = self._source()  # a missing folder is reported before seconds of imports
        torch, pipeline_class = import_stack()
        device = resolve_device(torch, self.requested_device)
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
            message = load_failure(source, exc, allow_download=self.allow_download)
            forget(exc)
            raise ModelError(message) from None
        if not all(hasattr(pipe, part) for part in ("unet", "vae", "text_encoder", "scheduler")):
            raise ModelError(f"{source!r} is not a Stable Diffusion pipeline")
        pipe.set_progress_bar_config(disable=True)
        try:
            pipe = pipe.to(device)
            if on_cuda:
                speed_up(torch, pipe, channels_last=self.channels_last, fuse_qkv=self.fuse_qkv)
        except Exception as exc:
            error = job_error(torch, exc, device=device, oom_advice="moving the pipeline there")
            raise type(error)(f"could not move the pipeline to {device}: {describe(exc)}") from None
        self._torch = torch
        self._pipe = pipe
        self.device = device
        self._schedulers, self._unavailable = prepare_schedulers(pipe.scheduler.config)
        if self.compile_options is not None:
            graphs = unet_graphs(self._warm_sizes(), self.limits.max_outputs)
            self.compilation = Compilation(torch, pipe, self.compile_options, graphs=graphs)
        if on_cuda or self.compilation is not None:
            try:
                self._warm_up()
            except ModelError:
                self._pipe = None  # a later load() starts again rather than keep a broken pipe
                _free_memory(torch, on_cuda)
                raise

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        """Generate the images one job asks for; see the module docstring for what it promises.

        Raises ``InvalidInput``, ``ExecutionTimeout``/``JobCancelled`` (from ``ctx``),
        ``OutOfMemory``, ``DeviceLost``, or ``ModelError`` for anything else the pipeline raised.
        """
        params = parse_input(job_input, self.limits)
        self._require_loaded()
        self._check_servable(params)
        ctx.check_cancelled()
        first = params.seed if params.seed is not None else secrets.randbelow(SEED_MAX + 1)
        seeds = [(first + i) % (SEED_MAX + 1) for i in range(params.num_outputs)]
        pixels = self._generate(params, seeds, StepReporter(ctx, params.num_inference_steps))
        ctx.check_cancelled()
        return [
            {"image": png_artifact(image, self.png_compression), "seed": seed}
            for image, seed in zip(pixels, seeds, strict=True)
        ]

    # --- for tests and the benchmark --------------------------------------------------------

    @property
    def pipeline(self) -> Any:
        """The loaded diffusers pipeline. Raises ``ModelError`` before :meth:`load`."""
        if self._pipe is None:
            raise ModelError("the Stable Diffusion model is not loaded (load() was not called)")
        return self._pipe

    # --- inside -----------------------------------------------------------------------------

    def _require_loaded(self) -> None:
        if self._lost is not None:
            raise DeviceLost(self._lost)
        if self._pipe is None:
            raise ModelError("the Stable Diffusion model is not loaded (load() was not called)")

    def _source(self) -> str:
        raw = (self.model_path or "").strip()
        if not raw:
            raise ModelError(
                "no model path: give a diffusers pipeline folder (MODEL_PATH) or a hub id that "
                "is in the local cache"
            )
        return pipeline_source(raw)

    def _check_servable(self, params: SdInput) -> None:
        reason = self._unavailable.get(params.scheduler)
        if reason is not None:
            available = ", ".join(n for n in SCHEDULER_NAMES if n not in self._unavailable)
            raise InvalidInput(
                f"invalid input: scheduler: {params.scheduler} is not available on this worker "
                f"({reason}); available: {available}"
            )
        if self.sizes and (params.width, params.height) not in self.sizes:
            served = ", ".join(f"{w}x{h}" for w, h in self.sizes)
            raise InvalidInput(
                f"invalid input: width x height: {params.width}x{params.height} is not served "
                f"by this worker; sizes served: {served}"
            )

    def _warm_sizes(self) -> tuple[tuple[int, int], ...]:
        return self.sizes or ((DEFAULT_SIDE, DEFAULT_SIDE),)

    def _warm_up(self) -> None:
        """Run what jobs will run, on this (the jobs') thread: with compile, one short job per
        graph a job can need (see ``warmup_plan``); without, one image at the default size."""
        if self.compilation is not None:
            plan = warmup_plan(self._warm_sizes(), self.limits.max_outputs)
        else:
            width, height = self._warm_sizes()[0]
            plan = [(width, height, 1, True)]
        for width, height, outputs, guided in plan:
            params = SdInput.model_construct(
                prompt="warm-up", width=width, height=height, num_outputs=outputs,
                num_inference_steps=WARMUP_STEPS, guidance_scale=7.5 if guided else 1.0,
                scheduler="DDIM", negative_prompt=None, seed=0,
            )
            try:
                self._generate(params, list(range(outputs)), None, warming=True)
            except PodworkerError as exc:
                kind = type(exc) if isinstance(exc, ModelError) else ModelError
                raise kind(f"warm-up failed: {exc}") from None

    def _generate(
        self, params: SdInput, seeds: list[int], on_step: StepReporter | None, warming: bool = False
    ) -> Any:
        """uint8 pixels (N x H x W x 3, on the host) for ``seeds``. Raises as :meth:`run` says.
        While ``warming``, graphs are compiled; in a job, never."""
        torch = self._torch
        pipe = self._pipe
        pipe.scheduler = self._schedulers[params.scheduler]
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
        compiled = self.compilation
        serving = contextlib.nullcontext() if compiled is None or warming else compiled.serving()
        try:
            with torch.inference_mode(), serving:
                result = pipe(
                    prompt=params.prompt,
                    negative_prompt=params.negative_prompt or None,
                    width=params.width,
                    height=params.height,
                    num_inference_steps=params.num_inference_steps,
                    guidance_scale=params.guidance_scale,
                    num_images_per_prompt=len(seeds),
                    generator=generators,
                    output_type="pt",
                    callback_on_step_end=on_step,
                    callback_on_step_end_tensor_inputs=[],
                )
                return to_pixels(torch, result.images)
        except PodworkerError:
            raise  # ExecutionTimeout / JobCancelled from the step callback, unchanged
        except Exception as exc:
            error = job_error(
                torch, exc, device=str(self.device),
                oom_advice=f"making {len(seeds)} image(s) of {params.width}x{params.height}: "
                "ask for fewer num_outputs or a smaller width/height",
            )
        # The failed call's frames were cleared: give their memory back before reporting.
        if isinstance(error, OutOfMemory | DeviceLost):
            _free_memory(torch, str(self.device).startswith("cuda"))
        if isinstance(error, DeviceLost):
            self._lost = str(error)
        raise error from None


def _free_memory(torch: Any, on_cuda: bool) -> None:
    gc.collect()
    if on_cuda:
        try:
            torch.cuda.empty_cache()
        except Exception as exc:  # a lost device may refuse even this
            forget(exc)
