"""The Stable Diffusion model: a diffusers pipeline family behind the ``Model`` port.

SD 1.x/2.x, SDXL, SD3 or Flux (:mod:`.families`), text-to-image, image-to-image and
inpainting from the same weights (:mod:`.pipelines`); inputs checked by the family's schema
(:mod:`.family_schema`), input images loaded by an ``ImageLoader`` (:mod:`.job_images`). Why:

- **Loaded once, on the jobs' thread.** :meth:`StableDiffusionModel.load` loads the pipeline a
  single time, with ``local_files_only`` unless downloads are allowed, so a pod with baked-in
  weights never touches the network. The worker calls it on its model thread, the thread that
  then runs every job: cuDNN plans, cuBLAS handles and CUDA-graph trees are per thread, so the
  warm-up's work is the jobs' work.
- **Fast on CUDA.** fp16 weights (bf16 for SD3 and Flux), SDPA attention, channels-last UNet
  and VAE, optionally fused QKV projections and ``torch.compile`` made safe (see
  :mod:`.acceleration`: compile failures fall back to eager, every served shape is compiled at
  load, none during a job), and a warm-up at load. Compiling covers UNets (SD, SDXL); for SD3
  and Flux it is skipped with a log line. On CPU: fp32, and a warm-up only when compiling.
- **Sizes.** ``sizes`` (``SD_SIZES``), when given, are the only output sizes served (else
  ``InvalidInput``) and the ones compiled at load. torch and diffusers are imported by ``load``.
- **Interruptible and observable.** Every denoising step calls ``ctx.check_cancelled()``
  (through diffusers' ``callback_on_step_end``), so a work timeout or a job-stop ends the job at
  the next step with ``ExecutionTimeout``/``JobCancelled``; and ``ctx.progress({"step": k,
  "of": n})`` with ``n`` the steps the job runs: ``num_inference_steps``, or
  ``int(num_inference_steps * prompt_strength)`` with an ``init_image`` (schedulers that
  evaluate the UNet more than once a step, such as HEUN, still count to ``n``).
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

The safety checker (SD 1.x only) is not loaded, like RunPod's templates: filtering is the
caller's business.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from typing import Any

from adapters.image_inputs import ImageInputLimits, ImageLoader
from adapters.stable_diffusion import pipelines
from adapters.stable_diffusion.acceleration import (
    Compilation,
    CompileOptions,
    speed_up,
    warmup_plan,
)
from adapters.stable_diffusion.families import FamilySpec, detect_family
from adapters.stable_diffusion.family_schema import FamilyInput, parse_family_input
from adapters.stable_diffusion.faults import describe, free_memory, job_error
from adapters.stable_diffusion.images import PNG_COMPRESS_LEVEL, png_artifact, to_pixels
from adapters.stable_diffusion.job_images import JobImages, prepare_images
from adapters.stable_diffusion.loading import (
    dtype_argument,
    import_stack,
    pipeline_source,
    quiet_progress_bars,
    resolve_device,
)
from adapters.stable_diffusion.schedulers import prepare_schedulers
from adapters.stable_diffusion.schema import SEED_MAX, SdLimits
from adapters.stable_diffusion.steps import StepReporter
from domain.errors import DeviceLost, InvalidInput, ModelError, OutOfMemory, PodworkerError
from domain.ports import JobContext

__all__ = ["CompileOptions", "StableDiffusionModel", "dtype_argument", "quiet_progress_bars"]

NOT_LOADED = "the Stable Diffusion model is not loaded (load() was not called)"


class StableDiffusionModel:
    """Images from a diffusers pipeline family; conforms to ``domain.ports.Model``.

    ``model_path`` is a diffusers pipeline folder or a hub id found in the local cache.
    ``family`` is a :class:`FamilySpec`, or ``"auto"`` to read it from the weights (when they
    cannot be read yet, at :meth:`load`). ``device`` is ``"auto"`` (CUDA when available, else
    CPU), ``"cuda"``, ``"cuda:N"`` or ``"cpu"``. ``compile`` is False, True (Inductor, default
    mode) or :class:`CompileOptions`. ``limits`` bound what one job may ask for; ``sizes``
    restrict width x height (empty: any); ``png_compression`` is zlib's level (0-9);
    ``channels_last`` and ``fuse_qkv`` tune CUDA. ``images`` loads ``init_image``/``mask``
    (default: base64 and data URLs only); http(s) URLs are accepted exactly when it has a
    fetcher (``INPUT_URL_FETCH``).
    """

    def __init__(
        self,
        model_path: str | None,
        *,
        family: FamilySpec | str = "auto",
        device: str = "auto",
        allow_download: bool = False,
        compile: bool | CompileOptions = False,
        limits: SdLimits | None = None,
        sizes: Sequence[tuple[int, int]] = (),
        png_compression: int = PNG_COMPRESS_LEVEL,
        channels_last: bool = True,
        fuse_qkv: bool = False,
        images: ImageLoader | None = None,
    ) -> None:
        self.model_path = model_path
        self.spec: FamilySpec | None = family if isinstance(family, FamilySpec) else None
        if self.spec is None:
            with contextlib.suppress(ModelError):  # load() says why, once it needs the weights
                self.spec = detect_family((model_path or "").strip() or ".", str(family))
        self.requested_device = device
        self.allow_download = allow_download
        options = CompileOptions() if compile is True else compile or None
        self.compile_options: CompileOptions | None = options
        self.limits = limits or SdLimits()
        self.sizes = tuple(sizes)
        self.png_compression = png_compression
        self.channels_last = channels_last
        self.fuse_qkv = fuse_qkv
        self.images = images or ImageLoader(ImageInputLimits())
        self.device: str | None = None  # the device in use, once loaded
        self.compilation: Compilation | None = None  # once loaded with compile on
        self._torch: Any = None
        self._pipe: Any = None
        self._variants: dict[str, Any] = {}
        self._schedulers: dict[str, Any] = {}
        self._unavailable: dict[str, str] = {}  # scheduler or task -> why this worker lacks it
        self._lost: str | None = None  # set once the device is lost: every job fails at once

    # --- the Model port ---------------------------------------------------------------------

    def load(self) -> None:
        """Load the pipelines and warm them up. A second call does nothing. ``ModelError``."""
        if self._pipe is not None:
            return
        source = self._source()  # a missing folder is reported before seconds of imports
        spec = self.spec = pipelines.checked_family(
            self.spec, source, self.limits, allow_download=self.allow_download
        )
        torch, diffusers = import_stack()
        device = resolve_device(torch, self.requested_device)
        on_cuda = device.startswith("cuda")
        quiet_progress_bars()
        dtype = pipelines.family_dtype(torch, spec, on_cuda=on_cuda)
        pipe = pipelines.load_pipeline(
            diffusers, spec, source, dtype=dtype, allow_download=self.allow_download
        )
        try:
            pipe = pipe.to(device)
            if on_cuda:
                speed_up(torch, pipe, channels_last=self.channels_last, fuse_qkv=self.fuse_qkv)
        except Exception as exc:
            error = job_error(torch, exc, device=device, oom_advice="moving the pipeline there")
            raise type(error)(f"could not move the pipeline to {device}: {describe(exc)}") from None
        self._variants, unavailable = pipelines.make_variants(diffusers, spec, pipe)
        self._torch = torch
        self._pipe = pipe
        self.device = device
        if spec.default_scheduler:
            self._schedulers, self._unavailable = prepare_schedulers(pipe.scheduler.config)
        self._unavailable |= unavailable
        if self.compile_options is not None:
            self.compilation = pipelines.compile_denoiser(
                torch, spec, pipe, self.compile_options, sizes=self._warm_sizes(),
                max_outputs=self.limits.max_outputs,
            )
        if on_cuda or self.compilation is not None:
            try:
                self._warm_up()
            except ModelError:
                self._pipe = None  # a later load() starts again rather than keep a broken pipe
                self._variants = {}
                free_memory(torch, on_cuda)
                raise

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        """Generate the images one job asks for; see the module docstring for what it promises.

        Raises ``InvalidInput``, ``ExecutionTimeout``/``JobCancelled`` (from ``ctx``),
        ``OutOfMemory``, ``DeviceLost``, or ``ModelError`` for anything else the pipeline raised.
        """
        spec = self.spec
        if spec is None:  # unknown until the weights are read, by load()
            raise ModelError(NOT_LOADED)
        params = parse_family_input(job_input, spec, self.limits, fetch_urls=self.fetch_urls)
        self._require_loaded()
        self._check_servable(params)
        ctx.check_cancelled()
        images = prepare_images(params, spec, self.images, self.limits)
        self._check_servable(params, images)
        ctx.check_cancelled()
        first = params.seed if params.seed is not None else secrets.randbelow(SEED_MAX + 1)
        seeds = [(first + i) % (SEED_MAX + 1) for i in range(params.num_outputs)]
        steps = pipelines.denoising_steps(params, images)
        pixels = self._generate(params, images, seeds, StepReporter(ctx, steps))
        ctx.check_cancelled()
        return [
            {"image": png_artifact(image, self.png_compression), "seed": seed}
            for image, seed in zip(pixels, seeds, strict=True)
        ]

    # --- for tests and the benchmark --------------------------------------------------------

    @property
    def pipeline(self) -> Any:
        """The loaded text-to-image pipeline. Raises ``ModelError`` before :meth:`load`."""
        if self._pipe is None:
            raise ModelError(NOT_LOADED)
        return self._pipe

    @property
    def fetch_urls(self) -> bool:
        """Whether ``init_image``/``mask`` may be http(s) URLs (the loader has a fetcher)."""
        return self.images.fetcher is not None

    @property
    def variants(self) -> dict[str, Any]:
        """The loaded pipeline of each task (``text2img``, ``img2img``, ``inpaint``)."""
        return dict(self._variants)

    # --- inside -----------------------------------------------------------------------------

    def _require_loaded(self) -> None:
        if self._lost is not None:
            raise DeviceLost(self._lost)
        if self._pipe is None:
            raise ModelError(NOT_LOADED)

    def _source(self) -> str:
        raw = (self.model_path or "").strip()
        if not raw:
            raise ModelError(
                "no model path: give a diffusers pipeline folder (MODEL_PATH) or a hub id that "
                "is in the local cache"
            )
        return pipeline_source(raw)

    def _check_servable(self, params: FamilyInput, images: JobImages | None = None) -> None:
        reason = pipelines.refusal(params, images, unavailable=self._unavailable,
                                   sizes=self.sizes)
        if reason is not None:
            raise InvalidInput(f"invalid input: {reason}")

    def _warm_sizes(self) -> tuple[tuple[int, int], ...]:
        side = self.spec.default_side if self.spec else 512
        return self.sizes or ((side, side),)

    def _warm_up(self) -> None:
        """Run what jobs will run, on this (the jobs') thread: with compile, one short job per
        graph a job can need (see ``warmup_plan``); without, one image at the default size."""
        assert self.spec is not None
        if self.compilation is not None:
            plan = warmup_plan(self._warm_sizes(), self.limits.max_outputs)
        else:
            width, height = self._warm_sizes()[0]
            plan = [(width, height, 1, True)]
        for width, height, outputs, guided in plan:
            params = pipelines.warmup_input(self.spec, width, height, outputs, guided)
            try:
                images = JobImages("text2img", width, height)
                self._generate(params, images, list(range(outputs)), None, warming=True)
            except PodworkerError as exc:
                kind = type(exc) if isinstance(exc, ModelError) else ModelError
                raise kind(f"warm-up failed: {exc}") from None

    def _generate(
        self, params: FamilyInput, images: JobImages, seeds: list[int],
        on_step: StepReporter | None, warming: bool = False,
    ) -> Any:
        """uint8 pixels (N x H x W x 3, on the host) for ``seeds``. Raises as :meth:`run` says.
        While ``warming``, graphs are compiled; in a job, never."""
        torch = self._torch
        pipe = self._variants[images.task]
        if params.scheduler is not None:
            pipe.scheduler = self._schedulers[params.scheduler]
        assert self.spec is not None
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
        arguments = pipelines.call_arguments(pipe, self.spec, params, images, generators=generators,
                                             on_step=on_step)
        compiled = self.compilation
        serving = contextlib.nullcontext() if compiled is None or warming else compiled.serving()
        try:
            with torch.inference_mode(), serving:
                return to_pixels(torch, pipe(**arguments).images)
        except PodworkerError:
            raise  # ExecutionTimeout / JobCancelled from the step callback, unchanged
        except Exception as exc:
            error = job_error(
                torch, exc, device=str(self.device),
                oom_advice=f"making {len(seeds)} image(s) of {images.width}x{images.height}: "
                "ask for fewer num_outputs or a smaller width/height",
            )
        # The failed call's frames were cleared: give their memory back before reporting.
        if isinstance(error, OutOfMemory | DeviceLost):
            free_memory(torch, str(self.device).startswith("cuda"))
        if isinstance(error, DeviceLost):
            self._lost = str(error)
        raise error from None

