"""The fast path: SDPA attention, channels-last, fused QKV, and ``torch.compile`` made safe.

What compiling promises (``MODEL_COMPILE=true``):

- **It cannot break a pod.** Any failure while compiling (no C compiler for Triton, an Inductor
  bug, a backend that raises) turns compilation off for the whole pipeline with one warning,
  and the call that failed runs again uncompiled: the worker loads and serves, only slower.
  Out-of-memory and a dead CUDA context are not compile failures; they propagate as they are.
- **No compile inside a job.** Graphs are static (``dynamic=False``) and made at load, on the
  model thread, for every shape a job can ask for: each size in ``SD_SIZES`` (512x512 when
  unset) times every UNet batch (``n`` images without guidance, ``2n`` with, for ``n`` up to
  ``SD_MAX_OUTPUTS``). The UNet's timestep is handed over as float32 whatever the scheduler's
  dtype (int64 for DDIM, PNDM, DPM++; float for Euler, Heun, K-LMS): the UNet embeds it in
  float32 anyway, so the images are the same and one graph serves every scheduler. Jobs run
  under dynamo's ``eager_on_recompile`` stance: a shape nobody warmed (a size outside the
  buckets when ``SD_SIZES`` is unset) runs uncompiled rather than compiling mid-job, where a
  cancel could not interrupt it. The recompile limit is raised to fit every warmed graph.
- **Restarts reuse the work.** Inductor's and Triton's caches live under
  ``STATE_DIR/compile-cache`` (unless ``TORCHINDUCTOR_CACHE_DIR`` is set), so a restarted pod
  loads compiled kernels instead of compiling them again.
- ``SD_COMPILE_MODE`` picks torch.compile's mode; the ones with CUDA graphs
  (``reduce-overhead``, ``max-autotune``) have each output cloned, since a graph replay
  overwrites its outputs and schedulers keep earlier ones.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.stable_diffusion.faults import describe, is_device_lost, is_out_of_memory

log = logging.getLogger("podworker.model")

JOB_STANCE = "eager_on_recompile"
"""Dynamo's stance while a job runs (tests use ``fail_on_recompile`` to prove none happens)."""


@dataclass(frozen=True)
class CompileOptions:
    """How to compile. ``mode`` is torch.compile's (the setting ``SD_COMPILE_MODE`` lists the
    ones offered); ``backend`` is torch.compile's (tests use ``"eager"`` or one that raises);
    ``vae`` compiles the VAE decoder too; ``cache_dir`` holds Inductor's caches."""

    mode: str = "default"
    backend: Any = "inductor"
    vae: bool = False
    cache_dir: Path | None = None

    @property
    def cuda_graphs(self) -> bool:
        return self.backend == "inductor" and self.mode in ("reduce-overhead", "max-autotune")


def speed_up(torch: Any, pipe: Any, *, channels_last: bool, fuse_qkv: bool) -> None:
    """SDPA attention in the UNet and the VAE; channels-last UNet and VAE; optionally fused QKV.

    A transformer (SD3, Flux) keeps its own attention processors (joint attention, which the
    plain SDPA processor cannot run) and its layout (channels-last means nothing to a sequence
    of patches): only the VAE's are changed. Fusing QKV is skipped, with a log line, where the
    pipeline has no ``fuse_qkv_projections``."""
    attention: Any = importlib.import_module("diffusers.models.attention_processor")
    sdpa = attention.AttnProcessor2_0
    convolutional = [m for m in (getattr(pipe, "unet", None), pipe.vae) if m is not None]
    for module in convolutional:
        if not all(isinstance(p, sdpa) for p in module.attn_processors.values()):
            module.set_attn_processor(sdpa())
    if fuse_qkv:
        if hasattr(pipe, "fuse_qkv_projections"):
            pipe.fuse_qkv_projections()
        else:
            log.info("fused QKV skipped: %s has no fuse_qkv_projections", type(pipe).__name__,
                     extra={"event": "fuse_qkv_skipped"})
    if channels_last:
        for module in convolutional:
            module.to(memory_format=torch.channels_last)


def warmup_plan(
    sizes: Sequence[tuple[int, int]], max_outputs: int
) -> list[tuple[int, int, int, bool]]:
    """``(width, height, outputs, guided)`` jobs that make every graph a job can need, each
    once: per size, ``n`` outputs with guidance (UNet batch 2n, VAE batch n), and without
    (UNet batch n) when no earlier job made that UNet batch."""
    plan: list[tuple[int, int, int, bool]] = []
    for width, height in sizes:
        unet_batches: set[int] = set()
        for n in range(1, max_outputs + 1):
            plan.append((width, height, n, True))
            unet_batches.add(2 * n)
            if n not in unet_batches:
                plan.append((width, height, n, False))
                unet_batches.add(n)
    return plan


def unet_graphs(sizes: Sequence[tuple[int, int]], max_outputs: int) -> int:
    """How many UNet graphs :func:`warmup_plan` makes."""
    batches = {n for n in range(1, max_outputs + 1)} | {2 * n for n in range(1, max_outputs + 1)}
    return len(sizes) * len(batches)


class Compilation:
    """The compiled forwards of one pipeline, all falling back to eager together."""

    def __init__(self, torch: Any, pipe: Any, options: CompileOptions, *, graphs: int) -> None:
        self.torch = torch
        self.options = options
        self.failure: str | None = None  # why compiling was turned off, once it was
        if options.cache_dir is not None and options.backend == "inductor":
            options.cache_dir.mkdir(parents=True, exist_ok=True)
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(options.cache_dir / "inductor"))
        _raise_recompile_limit(torch, graphs)
        self.forwards: list[_CompiledForward] = []
        modules = [(pipe.unet, True), *([(pipe.vae.decoder, False)] if options.vae else [])]
        try:  # torch.compile itself refuses some set-ups (an unknown backend, say)
            for module, float_timestep in modules:
                self.forwards.append(_CompiledForward(self, module, float_timestep=float_timestep))
        except Exception as exc:
            self.fail(exc)

    @property
    def active(self) -> bool:
        return self.failure is None

    def fail(self, exc: Exception) -> None:
        """Turn compiling off for good (one warning), keeping the uncompiled forwards."""
        if self.failure is None:
            # dynamo wraps a backend's error (BackendCompilerFailed): name the backend's own
            inner = getattr(exc, "inner_exception", None) or exc.__cause__
            self.failure = describe(exc) if inner is None else describe(inner)
            log.warning(
                "torch.compile failed (%s); running uncompiled from now on", self.failure,
                extra={"event": "compile_failed"},
            )

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
        mode = None if options.mode == "default" or options.backend != "inductor" else options.mode
        self.compiled = torch.compile(
            self.eager, backend=options.backend, mode=mode, dynamic=False
        )
        module.forward = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        owner = self.owner
        if not owner.active:
            return self.eager(*args, **kwargs)
        torch = owner.torch
        if self.float_timestep:
            args, kwargs = _with_float_timestep(torch, args, kwargs)
        try:
            if owner.options.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            output = self.compiled(*args, **kwargs)
        except Exception as exc:
            if is_out_of_memory(torch, exc) or is_device_lost(torch, exc):
                raise
            owner.fail(exc)
            del exc
            return self.eager(*args, **kwargs)
        return _clone(torch, output) if owner.options.cuda_graphs else output


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
