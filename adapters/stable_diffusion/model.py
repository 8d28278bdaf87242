"""The Stable Diffusion model: a diffusers pipeline family behind the ``Model`` port.

SD 1.x/2.x, SDXL, SD3 or Flux (:mod:`.families`); text-to-image, image-to-image and inpainting
from the same weights (:mod:`.pipelines`); inputs checked by the family's schema
(:mod:`.schema`), input images loaded by an ``ImageLoader`` (:mod:`.job_images`). Why:

- **One device thread.** ``load`` (once, ``local_files_only`` unless downloads are allowed) and
  every pipeline call run on one thread, ``model-device`` (:mod:`.device_queue`): per-thread
  CUDA state makes the warm-up's work the jobs' work, and with ``CONCURRENCY`` > 1 the jobs'
  threads check inputs and load images side by side while the pipeline serves one call at once.
- **Batches** (``batch_max`` > 1, ``SD_BATCH_MAX``): jobs of one :func:`.batches.batch_key` on
  the model at once share a call, up to ``batch_max`` images; each keeps its seeds, progress,
  cancel and result. A batch that runs out of memory is run again job by job.
- **Fast on CUDA.** fp16 (bf16 for SD3 and Flux), SDPA, channels-last UNet and VAE, optionally
  fused QKV and ``torch.compile`` made safe (:mod:`.acceleration`: every served shape and batch
  compiled at load, none during a job; UNets only). On CPU: fp32, warm-up only when compiling.
- **Sizes.** ``sizes`` (``SD_SIZES``), when given, are the only output sizes served (else
  ``InvalidInput``) and the ones compiled at load. torch and diffusers are imported by ``load``.
- **SDXL's refiner** (``refiner_path``, ``SD_REFINER_PATH``; :mod:`.refiner`), loaded with the
  base and sharing its VAE and second text encoder, finishes ``use_refiner`` jobs.
- **LoRAs per job** (``loras``, a :class:`.lora_sources.LoraLibrary`): a job's LoRA files are
  found and checked on its own thread; the device thread loads them into an LRU and activates
  the job's set with its scales before its call (:mod:`.loras`). Jobs batch only with jobs of
  the same set and scales. With compilation, LoRA jobs run eager and the base model is restored
  (adapters unloaded) before a job without LoRA, so it runs the graphs compiled at load.
- **Interruptible and observable.** Every denoising step checks ``ctx.check_cancelled()`` (a
  work timeout or job-stop ends the job at the next step: ``ExecutionTimeout``/``JobCancelled``)
  and reports ``ctx.progress({"step": k, "of": n})``, ``n`` the steps the job runs (both stages'
  with the refiner).
- **Reproducible.** Image ``i`` comes from its own CPU ``torch.Generator`` seeded ``seed + i``
  (mod 2**32): the same image alone, with more outputs or in a batch (same device and dtype, up
  to batch-size rounding). PNG bytes are deterministic.
- **Faults** (:mod:`.faults`): out of memory fails the job with ``OutOfMemory`` once its tensors
  are released; a dead CUDA context raises ``DeviceLost`` (the worker drains and exits, code 6)
  and every later job gets it at once; anything else is ``ModelError("<class>: <message>")``.
- **Outputs are Artifacts.** ``run`` returns ``[{"image": Artifact, "seed": n}, ...]``: 8-bit
  pixels made on the device, PNG-encoded when the store stage reads them, on its own thread.
  Each entry also carries ``"notes"`` when the job sent fields that were ignored (a template's
  refiner settings on a worker without a refiner, say), saying which and why.
  The safety checker (SD 1.x only) is not loaded, like RunPod's templates.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from adapters.stable_diffusion import pipelines
from adapters.stable_diffusion.acceleration import Compilation, CompileOptions
from adapters.stable_diffusion.batches import Work, batch_key
from adapters.stable_diffusion.device_queue import BatchQueue, Member
from adapters.stable_diffusion.device_setup import (
    DeviceSetup,
    offload_needed,
    place_and_speed_up,
    read_weights,
)
from adapters.stable_diffusion.families import Family, FamilySpec, detect_family
from adapters.stable_diffusion.faults import describe, free_memory, job_error
from adapters.stable_diffusion.generation import generate, warm_up
from adapters.stable_diffusion.input_images import ImageInputLimits, ImageLoader
from adapters.stable_diffusion.job_images import JobImages, prepare_images
from adapters.stable_diffusion.limits import SEED_MAX, SdLimits
from adapters.stable_diffusion.loading import (
    dtype_argument,
    import_stack,
    model_source,
    quiet_progress_bars,
    resolve_device,
)
from adapters.stable_diffusion.lora_fields import OFF, LoraPolicy
from adapters.stable_diffusion.lora_sources import LoraLibrary, ResolvedLora
from adapters.stable_diffusion.loras import LoraAdapters
from adapters.stable_diffusion.output_images import PNG_COMPRESS_LEVEL, png_artifact
from adapters.stable_diffusion.refiner import Refiner, job_stages, load_refiner
from adapters.stable_diffusion.schedulers import prepare_schedulers
from adapters.stable_diffusion.schema import FamilyInput, parse_family_input
from adapters.stable_diffusion.steps import StepReporter
from domain.errors import DeviceLost, InvalidInput, ModelError, OutOfMemory
from domain.ports import JobContext, StartupReport

__all__ = ["CompileOptions", "StableDiffusionModel", "dtype_argument", "quiet_progress_bars"]

log = logging.getLogger("podworker.model")

NOT_LOADED = "the Stable Diffusion model is not loaded (load() was not called)"


def _unreported(phase: str) -> None:
    """Where phases go when ``load`` is called without a ``StartupReport``."""


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
    fetcher (``INPUT_URL_FETCH``). ``refiner_path``: an SDXL refiner folder, for SDXL only.
    ``first_block_cache``: the lossy first-block cache's threshold for a transformer (0: off;
    ``SD_FIRST_BLOCK_CACHE``).
    ``loras`` finds the LoRA files jobs name (None: jobs' LoRA fields are refused).
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
        batch_max: int = 1,
        batch_wait_s: float = 0.02,
        refiner_path: str | None = None,
        first_block_cache: float = 0.0,
        loras: LoraLibrary | None = None,
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
        self.refiner_path = refiner_path
        self.first_block_cache = first_block_cache
        self.setup = DeviceSetup("none")  # where and how the pipeline runs, once loaded
        self.refiner: Refiner | None = None  # once loaded with a refiner_path
        self.loras = loras
        if loras is not None and fuse_qkv:
            # A LoRA's q/k/v layers would find them fused into one projection and change
            # nothing: LoRA jobs need the projections as they were trained on.
            log.warning("fused QKV projections skipped: LoRAs are on (LORA_DIR or "
                        "LORA_URL_FETCH) and apply to the unfused ones",
                        extra={"event": "fuse_qkv_skipped"})
            self.fuse_qkv = False
        self.adapters: LoraAdapters | None = None  # once loaded with loras
        self.device: str | None = None  # the device in use, once loaded
        self.compilation: Compilation | None = None  # once loaded with compile on
        self._torch: Any = None
        self._pipe: Any = None
        self._variants: dict[str, Any] = {}
        self._schedulers: dict[str, Any] = {}
        self._unavailable: dict[str, str] = {}  # scheduler or task -> why this worker lacks it
        self._lost: str | None = None  # set once the device is lost: every job fails at once
        self.device_queue: BatchQueue[Work] = BatchQueue(  # public for tests and the bench
            self._run_batch, max_rows=batch_max, wait_s=batch_wait_s)
        # the most images per call (lowered by a warm-up that ran out of memory, _fit_rows)
        self._max_rows = max(self.limits.max_outputs, self.device_queue.max_rows)

    # --- the Model port ---------------------------------------------------------------------

    def load(self, startup: StartupReport | None = None) -> None:
        """Load the pipelines and warm them up, on the device thread. A second call does
        nothing. Raises ``ModelError``. Reports its phases to ``startup``: ``import`` (torch,
        diffusers), ``weights`` (the pipelines, the refiner's too), ``device`` (moved and
        tuned), ``warmup`` (compile and warm-up, on CUDA or with ``compile``)."""
        phase = startup.phase if startup is not None else _unreported
        self.device_queue.call(lambda: self._load(phase))

    def _load(self, phase: Callable[[str], None]) -> None:
        if self._pipe is not None:
            return
        phase("import")
        source = model_source(self.model_path)  # before seconds of imports
        spec = self.spec = pipelines.checked_family(
            self.spec, source, self.limits, allow_download=self.allow_download
        )
        torch, diffusers = import_stack()
        device = resolve_device(torch, self.requested_device)
        on_cuda = device.startswith("cuda")
        quiet_progress_bars()
        dtype = pipelines.family_dtype(torch, spec, on_cuda=on_cuda)
        phase("weights")
        offload = self._offload_needed(torch, source, device, dtype)
        pipe = read_weights(diffusers, spec, source, dtype=dtype,
                            allow_download=self.allow_download,
                            straight_to=device if not offload else None)
        phase("device")
        try:
            pipe, self.setup = place_and_speed_up(
                torch, pipe, device=device, dtype=dtype, offload=offload,
                channels_last=self.channels_last, fuse_qkv=self.fuse_qkv,
                batch_rows=self._max_rows, upcasting_vae=spec.family == Family.SDXL)
        except Exception as exc:
            raise self._device_error(torch, exc, device) from None
        if self.loras is not None:
            self.adapters = LoraAdapters(self.loras.limits.cache_max, family_label=spec.label,
                                         unload_for_base=self.compile_options is not None)
            self.adapters.prepare(pipe)
        self._variants, unavailable = pipelines.make_variants(diffusers, spec, pipe)
        if self.refiner_path is not None:
            phase("weights")
            self.refiner = load_refiner(
                torch, diffusers, spec, self.refiner_path, pipe, dtype=dtype, device=device,
                allow_download=self.allow_download, tuning=(self.channels_last, self.fuse_qkv))
        self._torch = torch
        self._pipe = pipe
        self.device = device
        if spec.default_scheduler:
            self._schedulers, self._unavailable = prepare_schedulers(pipe.scheduler.config)
        self._unavailable |= unavailable
        if on_cuda or self.compile_options is not None:
            phase("warmup")
        if self.compile_options is not None and not self.setup.offloaded:
            self.compilation = pipelines.compile_denoiser(
                torch, spec, pipe, self.compile_options, sizes=self._warm_sizes(),
                max_outputs=self._max_rows, device=device, model=source,
            )
        if self.adapters is not None:  # unloading serves compiled graphs only: are there any?
            self.adapters.unload_for_base = (self.compilation is not None
                                             and self.compilation.active)
        if self.first_block_cache:
            pipelines.first_block_cache(diffusers, spec, pipe, self.first_block_cache)
        if on_cuda or self.compilation is not None:
            warming = (self.compilation.warming() if self.compilation is not None
                       else contextlib.nullcontext())
            try:
                with warming:
                    fit = warm_up(lambda works: self._generate(works, None, warming=True), spec,
                                  self._warm_sizes(), max_rows=self._max_rows,
                                  compiled=self.compilation is not None
                                  and self.compilation.active)
            except ModelError:
                self._pipe = None  # a later load() starts again rather than keep a broken pipe
                self._variants = {}
                free_memory(torch, on_cuda)
                raise
            if fit < self._max_rows:
                self._fit_rows(fit)

    def _loras_of(self, params: FamilyInput, ctx: JobContext) -> tuple[ResolvedLora, ...]:
        """The job's LoRAs, found or fetched; a job-stop cuts a download (``on_cancel``, where
        the context offers it), and then the job is cancelled, not failed for its LoRA."""
        if not self.loras or not params.adapters:
            return ()
        try:
            loras = self.loras.resolve(params.adapters, on_cancel=getattr(ctx, "on_cancel", None))
        except InvalidInput:
            ctx.check_cancelled()  # a download cut by a job-stop: the stop is the answer
            raise
        ctx.check_cancelled()
        return loras

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        """Generate the images one job asks for; see the module docstring for what it promises.

        Raises ``InvalidInput``, ``ExecutionTimeout``/``JobCancelled`` (from ``ctx``),
        ``OutOfMemory``, ``DeviceLost``, or ``ModelError`` for anything else the pipeline raised.
        """
        spec = self.spec
        if spec is None:  # unknown until the weights are read, by load()
            raise ModelError(NOT_LOADED)
        params = parse_family_input(job_input, spec, self.limits, fetch_urls=self.fetch_urls,
                                    refiner=self.refiner_path is not None,
                                    loras=self.lora_policy)
        self._require_loaded()
        self._check_servable(params)
        ctx.check_cancelled()
        loras = self._loras_of(params, ctx)
        images = prepare_images(params, spec, self.images, self.limits)
        self._check_servable(params, images)
        ctx.check_cancelled()
        first = params.seed if params.seed is not None else secrets.randbelow(SEED_MAX + 1)
        seeds = [(first + i) % (SEED_MAX + 1) for i in range(params.num_outputs)]
        stages = job_stages(self.refiner, self._schedulers, params, images)
        work = Work(params, images, seeds, stages, loras)
        pixels = self.device_queue.submit(work, key=batch_key(work), rows=len(seeds), ctx=ctx)
        ctx.check_cancelled()
        notes = {"notes": list(params.notes)} if params.notes else {}  # what was ignored, why
        return [
            {"image": png_artifact(image, self.png_compression), "seed": seed, **notes}
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
    def lora_policy(self) -> LoraPolicy:
        """Which LoRA sources jobs may name (none without a LoRA library)."""
        return self.loras.policy if self.loras is not None else OFF

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

    def _offload_needed(self, torch: Any, source: str, device: str, dtype: Any) -> bool:
        """Model CPU offload or not, decided from the weights' files before they are read."""
        try:
            return offload_needed(torch, source=source, device=device, dtype=dtype)
        except Exception as exc:  # the GPU cannot tell its free memory: it is not usable
            raise self._device_error(torch, exc, device) from None

    @staticmethod
    def _device_error(torch: Any, exc: Exception, device: str) -> ModelError:
        error = job_error(torch, exc, device=device, oom_advice="moving the pipeline there")
        return type(error)(f"could not move the pipeline to {device}: {describe(exc)}")

    def _fit_rows(self, fit: int) -> None:
        """Calls make at most ``fit`` images from now on (larger ones ran out of memory at
        warm-up): batches stay within it, and a job asking more images is refused."""
        self._max_rows = fit
        self.device_queue.max_rows = min(self.device_queue.max_rows, fit)
        if self.compilation is not None:
            self.compilation.max_rows = fit

    def _check_servable(self, params: FamilyInput, images: JobImages | None = None) -> None:
        reason = pipelines.refusal(params, images, unavailable=self._unavailable,
                                   sizes=self.sizes)
        if reason is None and params.num_outputs > self._max_rows:  # only once _fit_rows ran
            reason = (f"num_outputs: at most {self._max_rows} on this worker (more images in "
                      "one call ran out of GPU memory at warm-up)")
        if reason is not None:
            raise InvalidInput(f"invalid input: {reason}")

    def _warm_sizes(self) -> tuple[tuple[int, int], ...]:
        side = self.spec.default_side if self.spec else 512
        return self.sizes or ((side, side),)

    def _run_batch(self, members: list[Member[Work]]) -> None:
        """One pipeline call for ``members`` (jobs of one key; on the device thread), each
        answered with its images. A batch that runs out of memory is run again job by job."""
        self._require_loaded()  # a device lost by an earlier batch fails these at once
        works = [member.work for member in members]
        steps = StepReporter(lambda: [m.ctx for m in self.device_queue.members_left(members)],
                             works[0].stages)
        try:
            pixels = self._generate(works, steps)
        except OutOfMemory:
            if len(members) == 1:
                raise
            log.warning("a batch of %d jobs ran out of memory: running them one by one",
                        len(members), extra={"event": "batch_split"})
            for member in members:
                try:
                    self._run_batch([member])
                except BaseException as exc:
                    member.fail(exc)
            return
        start = 0
        for member in members:
            member.resolve(pixels[start:start + member.rows])
            start += member.rows

    def _generate(
        self, works: list[Work], on_step: StepReporter | None, warming: bool = False
    ) -> Any:
        """One pipeline call for ``works`` (see :mod:`.generation`), with their scheduler."""
        assert self.spec is not None
        first = works[0]
        pipe = self._variants[first.images.task]
        refiner = self.refiner.serving(first.params) if self.refiner is not None else None
        if first.params.scheduler is not None:
            pipe.scheduler = self._schedulers[first.params.scheduler]
        try:
            if self.adapters is not None:  # every job of a batch has the same LoRA set
                self.adapters.activate(self._torch, self._pipe, first.loras,
                                       device=str(self.device))
            return generate(self._torch, pipe, self.spec, works, on_step,
                            device=str(self.device), compilation=self.compilation,
                            warming=warming, refiner=refiner, eager=bool(first.loras))
        except DeviceLost as exc:
            self._lost = str(exc)
            raise
