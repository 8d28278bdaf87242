"""The fast path: SDPA attention, channels-last, fused QKV, and ``torch.compile`` made safe.

What compiling promises (``MODEL_COMPILE=true``):

- **It cannot break a pod.** Any failure while compiling (no C compiler for Triton, an Inductor
  bug, a backend that raises) turns compilation off for the whole pipeline with one warning,
  and the call that failed runs again uncompiled: the worker loads and serves, only slower.
  Out-of-memory is not a compile failure; it propagates as it is. An error that looks like a
  dead CUDA context (a CUDA-graph capture error reads like one) is checked with a tiny operation
  on the device first: a device that still answers means the compiled graph, not the GPU, was
  at fault, and the pipeline falls back to eager; only a device that does not answer propagates
  (``DeviceLost``, the pod restarts). Falling back frees the CUDA graphs' memory pools.
- **No compile inside a job.** Graphs are static (``dynamic=False``) and made at load, on the
  model thread, for every shape a job can ask for: each size in ``SD_SIZES`` (512x512 when
  unset) times every denoiser batch (``n`` images without guidance, ``2n`` with). A call is
  padded to a few row counts (:func:`.warmup_plan.batch_rows`: 1, 2, 4, 8... up to the most
  images a call may make), its extra rows dropped after, so 8 images take 5 UNet graphs per
  size, not 12. A row count that runs out of memory at warm-up is dropped with the larger ones
  (see :func:`.generation.warm_up`): the worker serves the rest. The UNet's timestep is handed
  over as float32 whatever the scheduler's dtype (int64 for DDIM, PNDM, DPM++; float for Euler,
  Heun, K-LMS): the UNet embeds it in float32 anyway, so one graph serves every scheduler.
  Inputs are handed over contiguous, whatever layout the pipeline made them in (img2img's
  latents come from a channels-last VAE), so the layout the warm-up compiled for is the layout
  every job brings. Jobs run under dynamo's ``eager_on_recompile`` stance: a shape nobody warmed
  runs uncompiled rather than compiling mid-job, where a cancel could not interrupt it.
- **UNets whole, transformers by block.** A UNet is compiled as one graph; a transformer (SD3,
  Flux) has its repeated blocks compiled (regional compilation: one graph serves every block of
  a kind, so compiling takes seconds, not minutes).
- **Restarts reuse the work, and a crash is not repeated** (:mod:`.compile_cache`): the warm-up
  compiles with Inductor's caches in the compile cache folder, saves the portable artifacts
  after, and a start after one that died while compiling, lost its GPU or ran out of memory in
  the compiled warm-up runs uncompiled instead of failing the same way again.
- ``SD_COMPILE_MODE`` picks torch.compile's mode; the ones with CUDA graphs
  (``reduce-overhead``, ``max-autotune``) have each output cloned, since a graph replay
  overwrites its outputs and schedulers keep earlier ones. ``tuned`` applies the Inductor
  settings diffusers documents for speed (1x1 convolutions as matrix products, coordinate-
  descent tuning, no epilogue fusion) while compiling.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.stable_diffusion.compile_cache import (
    ArtifactCache,
    WarmupMarker,
    cache_key,
    inductor_folder,
)
from adapters.stable_diffusion.faults import describe, forget, is_device_lost, is_out_of_memory
from adapters.stable_diffusion.warmup_plan import padded_rows
from domain.errors import DeviceLost, OutOfMemory

log = logging.getLogger("podworker.model")

JOB_STANCE = "eager_on_recompile"
"""Dynamo's stance while a job runs (tests use ``fail_on_recompile`` to prove none happens)."""

TUNED_INDUCTOR = {
    "conv_1x1_as_mm": True,
    "coordinate_descent_tuning": True,
    "coordinate_descent_check_all_directions": True,
    "epilogue_fusion": False,
}
"""The Inductor settings diffusers' speed guide uses for its UNets (``tuned``)."""


@dataclass(frozen=True)
class CompileOptions:
    """How to compile. ``mode`` is torch.compile's (the setting ``SD_COMPILE_MODE`` lists the
    ones offered); ``backend`` is torch.compile's (tests use ``"eager"`` or one that raises);
    ``vae`` compiles the VAE decoder too; ``cache_dir`` is the compile cache folder
    (:mod:`.compile_cache`: Inductor's files under ``inductor/`` and the portable artifacts);
    ``state_dir`` keeps the warm-up marker; ``tuned`` applies :data:`TUNED_INDUCTOR`;
    ``fullgraph`` makes a graph break a compile failure (falls back) instead of two graphs."""

    mode: str = "default"
    backend: Any = "inductor"
    vae: bool = False
    cache_dir: Path | None = None
    state_dir: Path | None = None
    tuned: bool = False
    fullgraph: bool = False

    @property
    def cuda_graphs(self) -> bool:
        return self.backend == "inductor" and self.mode in ("reduce-overhead", "max-autotune")

    @property
    def inductor(self) -> bool:
        return bool(self.backend == "inductor")


def speed_up(torch: Any, pipe: Any, *, channels_last: bool, fuse_qkv: bool) -> None:
    """SDPA attention in the UNet and the VAE; channels-last UNet and VAE; optionally fused QKV.

    A transformer (SD3, Flux) keeps its own attention processors (joint attention, which the
    plain SDPA processor cannot run) and its layout (channels-last means nothing to a sequence
    of patches): only the VAE's are changed. Fused QKV goes to the pipeline (UNet and VAE) or,
    for a transformer, to the transformer and the VAE; a model that cannot fuse says so in the
    log and runs unfused."""
    attention: Any = importlib.import_module("diffusers.models.attention_processor")
    sdpa = attention.AttnProcessor2_0
    convolutional = [m for m in (getattr(pipe, "unet", None), pipe.vae) if m is not None]
    for module in convolutional:
        if not all(isinstance(p, sdpa) for p in module.attn_processors.values()):
            module.set_attn_processor(sdpa())
    if fuse_qkv:
        transformer = getattr(pipe, "transformer", None)
        targets = [pipe] if transformer is None else [transformer, pipe.vae]
        for target in targets:
            try:
                target.fuse_qkv_projections()
            except Exception as exc:  # a model without fusable attention: slower, not broken
                log.info("fused QKV skipped for %s: %s", type(target).__name__, describe(exc),
                         extra={"event": "fuse_qkv_skipped"})
    if channels_last:
        for module in convolutional:
            module.to(memory_format=torch.channels_last)


def repeated_blocks(module: Any) -> list[Any]:
    """The blocks of the classes ``module._repeated_blocks`` names (diffusers marks a
    transformer's repeated blocks so; Flux's are), else the members of its
    ``transformer_blocks`` list (SD3's, which this diffusers does not mark), in order."""
    names = set(getattr(module, "_repeated_blocks", None) or ())
    if not names:
        names = {type(m).__name__ for m in getattr(module, "transformer_blocks", ())}
    return [m for m in module.modules() if type(m).__name__ in names]


def device_alive(torch: Any, device: str) -> bool:
    """Whether ``device`` still runs a tiny operation (always True for the CPU)."""
    if not device.startswith("cuda"):
        return True
    try:
        one = torch.ones(1, device=device)
        torch.cuda.synchronize(device)
        return bool((one + 1).item() == 2)
    except Exception as exc:
        forget(exc)
        return False


class Compilation:
    """The compiled forwards of one pipeline, all falling back to eager together.

    ``denoiser`` is ``"unet"`` (compiled whole) or ``"transformer"`` (its repeated blocks);
    ``device`` and ``model`` key the compile cache; ``probe`` tells whether the device still
    answers (default :func:`device_alive`); calls are padded to ``batch_rows(max_rows)``
    (:mod:`.warmup_plan`)."""

    def __init__(
        self, torch: Any, pipe: Any, options: CompileOptions, *, graphs: int,
        denoiser: str = "unet", device: str = "cpu", model: str = "",
        probe: Callable[[], bool] | None = None, max_rows: int = 1,
    ) -> None:
        self.torch = torch
        self.options = options
        self.max_rows = max_rows  # the most rows a call makes (lowered by a warm-up's OOM)
        self.device = device
        self.probe = probe or (lambda: device_alive(torch, device))
        self.failure: str | None = None  # why compiling was turned off, once it was
        self.forwards: list[_CompiledForward] = []
        key = cache_key(torch, device, mode=options.mode, model=model)
        self.artifacts = (ArtifactCache(options.cache_dir, key)
                          if options.cache_dir is not None and options.inductor else None)
        self.marker = (WarmupMarker(options.state_dir, key)
                       if options.state_dir is not None else None)
        crashed = self.marker.crashed_before() if self.marker is not None else None
        if crashed is not None:
            self.failure = f"an earlier start died while compiling ({crashed})"
            log.warning("torch.compile skipped: %s; running uncompiled. Delete %s to compile "
                        "again", self.failure, self.marker.path if self.marker else "",
                        extra={"event": "compile_skipped_after_crash"})
            return
        if denoiser == "unet":
            modules = [(pipe.unet, True)]
        else:
            blocks = repeated_blocks(pipe.transformer)
            modules = [(block, False) for block in blocks]
            graphs *= max(1, len({type(b) for b in blocks}))
        modules += [(pipe.vae.decoder, False)] if options.vae else []
        _raise_recompile_limit(torch, graphs)
        try:  # torch.compile itself refuses some set-ups (an unknown backend, say)
            for module, float_timestep in modules:
                self.forwards.append(_CompiledForward(self, module, float_timestep=float_timestep))
        except Exception as exc:
            self.fail(exc)

    @property
    def active(self) -> bool:
        return self.failure is None

    def padded(self, rows: int) -> int:
        """The rows a compiled call of ``rows`` images runs with (:func:`padded_rows`)."""
        return padded_rows(rows, self.max_rows)

    def fail(self, exc: Exception) -> None:
        """Turn compiling off for good (one warning), keeping the uncompiled forwards, and give
        back what the compiled graphs held (CUDA graphs' memory pools)."""
        if self.failure is not None:
            return
        # dynamo wraps a backend's error (BackendCompilerFailed): name the backend's own
        inner = getattr(exc, "inner_exception", None) or exc.__cause__
        self.failure = describe(exc) if inner is None else describe(inner)
        log.warning(
            "torch.compile failed (%s); running uncompiled from now on", self.failure,
            extra={"event": "compile_failed"},
        )
        for forward in self.forwards:
            forward.compiled = None
        if self.options.cuda_graphs:
            with contextlib.suppress(Exception):
                from torch._inductor import cudagraph_trees

                cudagraph_trees.reset_cudagraph_trees()
        gc.collect()
        if self.device.startswith("cuda"):
            with contextlib.suppress(Exception):
                self.torch.cuda.empty_cache()

    @contextlib.contextmanager
    def warming(self) -> Iterator[None]:
        """For the warm-up that compiles: the cache folder's artifacts loaded first and saved
        after, Inductor's folder and settings in force, the warm-up marker left behind only if
        the process dies (or loses its GPU) before the end."""
        if not self.active:
            yield
            return
        folder = (self.options.cache_dir / "inductor"
                  if self.options.cache_dir is not None and self.options.inductor else None)
        settings = TUNED_INDUCTOR if self.options.tuned and self.options.inductor else {}
        if self.marker is not None:
            self.marker.begin()
        try:
            with inductor_folder(self.torch, folder), self._inductor_settings(settings):
                if self.artifacts is not None:
                    self.artifacts.load(self.torch)
                yield
                if self.artifacts is not None and self.active:
                    self.artifacts.save(self.torch)
        except (DeviceLost, OutOfMemory):
            raise  # the marker stays: the next start runs uncompiled rather than fail again
        except BaseException:
            if self.marker is not None:
                self.marker.end()
            raise
        if self.marker is not None:
            self.marker.end()

    @contextlib.contextmanager
    def _inductor_settings(self, settings: dict[str, Any]) -> Iterator[None]:
        if not settings:
            yield
            return
        with self.torch._inductor.config.patch(settings):
            yield

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """For a job: compiled graphs where one fits, never a new compile."""
        if not self.active:
            yield
            return
        with self.torch.compiler.set_stance(JOB_STANCE):
            yield


class _CompiledForward:
    """``module.forward`` replaced by a compiled copy that falls back to the original."""

    def __init__(self, owner: Compilation, module: Any, *, float_timestep: bool) -> None:
        torch = owner.torch
        options = owner.options
        self.owner = owner
        self.eager = module.forward
        self.float_timestep = float_timestep
        mode = None if options.mode == "default" or not options.inductor else options.mode
        self.compiled: Any = torch.compile(
            self.eager, backend=options.backend, mode=mode, dynamic=False,
            fullgraph=options.fullgraph,
        )
        module.forward = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        owner = self.owner
        compiled = self.compiled
        if not owner.active or compiled is None:
            return self.eager(*args, **kwargs)
        torch = owner.torch
        if self.float_timestep:
            args, kwargs = _with_float_timestep(torch, args, kwargs)
        args, kwargs = _contiguous(torch, args, kwargs)
        try:
            if owner.options.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            output = compiled(*args, **kwargs)
        except Exception as exc:
            if is_out_of_memory(torch, exc):
                raise
            if is_device_lost(torch, exc) and not owner.probe():
                raise
            del compiled
            owner.fail(exc)
            forget(exc)
            del exc
            return self.eager(*args, **kwargs)
        return _clone(torch, output) if owner.options.cuda_graphs else output


def _contiguous(
    torch: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Tensors (and tensors in a dict, such as SDXL's ``added_cond_kwargs``) in the default
    contiguous layout: the one the warm-up compiled for."""

    def fix(value: Any) -> Any:
        if torch.is_tensor(value):
            return value.contiguous()
        if isinstance(value, dict):
            return {k: v.contiguous() if torch.is_tensor(v) else v for k, v in value.items()}
        return value

    return tuple(fix(a) for a in args), {k: fix(v) for k, v in kwargs.items()}


def _with_float_timestep(
    torch: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    sample = args[0] if args else kwargs.get("sample")
    device = getattr(sample, "device", None)

    def as_float(timestep: Any) -> Any:
        tensor = timestep if torch.is_tensor(timestep) else torch.tensor(timestep)
        return tensor.to(device=device, dtype=torch.float32)

    if len(args) >= 2:
        return (args[0], as_float(args[1]), *args[2:]), kwargs
    if "timestep" in kwargs:
        return args, {**kwargs, "timestep": as_float(kwargs["timestep"])}
    return args, kwargs


def _clone(torch: Any, value: Any) -> Any:
    if torch.is_tensor(value):
        return value.clone()
    if isinstance(value, tuple | list):
        return type(value)(_clone(torch, item) for item in value)
    return value


def _raise_recompile_limit(torch: Any, graphs: int) -> None:
    config = torch._dynamo.config
    wanted = graphs + 8  # a few frames beside the warmed ones (graph breaks)
    limits = (("recompile_limit", wanted), ("accumulated_recompile_limit", 8 * wanted))
    for name, at_least in limits:
        current = getattr(config, name, None)
        if isinstance(current, int) and current < at_least:
            setattr(config, name, at_least)
