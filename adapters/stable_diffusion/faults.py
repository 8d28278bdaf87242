"""What an exception from torch or diffusers means for the worker: the job's error, or the pod's.

::

    exception from the pipeline
    ├── out of memory          -> OutOfMemory   the job fails, memory is given back, jobs go on
    │     torch.cuda.OutOfMemoryError, MemoryError, "out of memory", "can't allocate memory",
    │     and any library's *_ALLOC_FAILED (CUBLAS_STATUS_ALLOC_FAILED, CUDNN_STATUS_ALLOC_FAILED,
    │     CUFFT_ALLOC_FAILED, ...): a library could not get workspace memory
    ├── a dead CUDA context    -> DeviceLost    the job fails, then the worker drains and exits
    │     CUDA errors that leave the context unusable (illegal memory access or instruction,
    │     device-side assert, launch failure or timeout, misaligned address, ECC error,
    │     *_EXECUTION_FAILED, ...), and any other torch.AcceleratorError (an error the device
    │     reported) but the ones CUDA documents as not sticky (invalid argument, configuration
    │     or value, not supported, too many resources, no kernel image)
    └── anything else          -> ModelError    the job fails, jobs go on

Why a dead context ends the process: after such an error every later CUDA call in the process
fails too, so a worker that stayed up would fail every job it took; exiting (code 6) lets the
platform restart the pod.

Why frames are cleared: an exception's traceback holds the frames of the failed call, and they
hold its tensors (gigabytes of activations). The error handed to the worker is raised ``from
None`` and the original's frames are cleared, so nothing keeps that memory alive.
"""

from __future__ import annotations

import gc
import logging
import re
import traceback
from typing import Any

from domain.errors import DeviceLost, ModelError, OutOfMemory

log = logging.getLogger("podworker.model")

_OUT_OF_MEMORY = re.compile(r"out of memory|can't allocate memory|[A-Z]+_ALLOC_FAILED")
_DEVICE_LOST = re.compile(
    r"illegal memory access|illegal instruction|illegal address|device-side assert"
    r"|unspecified launch failure|launch timed out|misaligned address|uncorrectable ecc"
    r"|ecc error|[A-Z]+_EXECUTION_FAILED|cuda error: unknown error|has fallen off the bus"
    r"|gpu is lost|cudaErrorLaunchFailure|context is destroyed|hardware stack error",
    re.IGNORECASE,
)

_NOT_STICKY = re.compile(
    r"invalid argument|invalid configuration|invalid value|not supported"
    r"|too many resources requested|invalid device function|no kernel image",
    re.IGNORECASE,
)


def is_out_of_memory(torch: Any, exc: BaseException) -> bool:
    """True when ``exc`` says the device (or the host) ran out of memory."""
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and bool(_OUT_OF_MEMORY.search(str(exc)))


def is_device_lost(torch: Any, exc: BaseException) -> bool:
    """True when ``exc`` leaves the CUDA context unusable (out-of-memory never does)."""
    if is_out_of_memory(torch, exc):
        return False
    text = str(exc)
    if isinstance(exc, RuntimeError) and _DEVICE_LOST.search(text):
        return True
    # Any other error the device reported counts as lost too (a restart costs a minute; a dead
    # context kept would fail every job), except the ones CUDA documents as not sticky.
    accelerator_error = getattr(torch, "AcceleratorError", None)
    return (
        accelerator_error is not None
        and isinstance(exc, accelerator_error)
        and not _NOT_STICKY.search(text)
    )


def describe(exc: BaseException) -> str:
    """``Class: first line of the message``, at most 300 characters."""
    lines = str(exc).strip().splitlines()
    first = lines[0].strip() if lines else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def forget(exc: BaseException) -> None:
    """Drop what ``exc`` keeps alive: its frames' locals (tensors), its traceback, its chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)  # skips frames still running
        current.__traceback__ = None
        current = current.__cause__ or current.__context__


def job_error(torch: Any, exc: Exception, *, device: str, oom_advice: str) -> ModelError:
    """The error a job gets for ``exc`` (see the module docstring), with ``exc`` forgotten.

    ``oom_advice`` ends the out-of-memory message (what the caller could ask for instead).
    The caller raises the result ``from None``.
    """
    if log.isEnabledFor(logging.DEBUG):
        log.debug("the pipeline raised", exc_info=exc)
    detail = describe(exc)
    error: ModelError
    if is_out_of_memory(torch, exc):
        error = OutOfMemory(f"out of memory on {device} {oom_advice} ({detail})")
    elif is_device_lost(torch, exc):
        error = DeviceLost(
            f"the GPU is unusable ({detail}); this worker stops so that the pod restarts"
        )
    else:
        error = ModelError(detail)
    forget(exc)
    return error


def free_memory(torch: Any, on_cuda: bool) -> None:
    """Collect garbage and, on CUDA, give the cache back (a lost device may refuse: ignored)."""
    gc.collect()
    if on_cuda:
        try:
            torch.cuda.empty_cache()
        except Exception as exc:
            forget(exc)
