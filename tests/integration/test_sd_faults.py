"""CUDA faults in the Stable Diffusion adapter, injected on the CPU: what each becomes for the job
and for the worker, and that a failed call's tensors are not kept alive by the error."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion.faults import is_device_lost, is_out_of_memory
from adapters.stable_diffusion.model import StableDiffusionModel
from domain.errors import DeviceLost, ModelError, OutOfMemory
from domain.execution import DetachedContext

torch = pytest.importorskip("torch")

SMALL = {"prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 2}
QUIET = DetachedContext("job-faults")  # never cancelled, progress dropped


@pytest.fixture
def model(tiny_sd_path: Path) -> Iterator[StableDiffusionModel]:
    """A model of its own: a lost device stays lost, so the session's model is not used."""
    fresh = StableDiffusionModel(str(tiny_sd_path), device="cpu")
    fresh.load()
    yield fresh


def fail_in_unet(model: StableDiffusionModel, make_error: Callable[[], Exception]) -> list[Any]:
    """Make the UNet raise ``make_error()`` after allocating a tensor; weak references to those
    tensors are returned, to check that nothing keeps them alive."""
    held: list[Any] = []

    def failing_forward(sample: Any, *args: Any, **kwargs: Any) -> Any:
        activations = torch.ones(256, 1024)  # what a real failed call would hold
        held.append(weakref.ref(activations))
        raise make_error()

    model.pipeline.unet.forward = failing_forward
    return held


def restore_unet(model: StableDiffusionModel) -> None:
    del model.pipeline.unet.forward


@pytest.mark.parametrize(
    "message",
    [
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
        "cuFFT error: CUFFT_ALLOC_FAILED",
        "CUDA out of memory. Tried to allocate 2.00 GiB",
    ],
)
def test_alloc_failed_from_any_cuda_library_is_out_of_memory_and_the_next_job_runs(
    model: StableDiffusionModel, message: str
) -> None:
    held = fail_in_unet(model, lambda: RuntimeError(message))

    with pytest.raises(OutOfMemory) as caught:
        model.run({**SMALL, "num_outputs": 2}, QUIET)

    assert "2 image(s) of 64x64" in str(caught.value)
    assert "fewer num_outputs or a smaller width/height" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    gc.collect()
    assert [ref() for ref in held] == [None], "the failed call's tensor is still alive"
    restore_unet(model)
    assert len(model.run(SMALL, QUIET)) == 1


@pytest.mark.parametrize(
    "make_error",
    [
        lambda: torch.AcceleratorError("CUDA error: an illegal memory access was encountered"),
        lambda: RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel "
                             "errors might be asynchronously reported"),
        lambda: RuntimeError("CUDA error: device-side assert triggered"),
        lambda: RuntimeError("CUDA error: unspecified launch failure"),
        lambda: RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling cublasGemm"),
    ],
    ids=["AcceleratorError", "illegal access", "device assert", "launch failure", "cublas exec"],
)
def test_a_dead_cuda_context_is_device_lost_and_every_later_job_fails_at_once(
    model: StableDiffusionModel, make_error: Callable[[], Exception]
) -> None:
    held = fail_in_unet(model, make_error)

    with pytest.raises(DeviceLost, match="the GPU is unusable") as caught:
        model.run(SMALL, QUIET)

    assert caught.value.__cause__ is None
    gc.collect()
    assert [ref() for ref in held] == [None]
    with pytest.raises(DeviceLost):  # nothing is tried again on a dead context
        model.run(SMALL, QUIET)
    assert len(held) == 1


def test_other_runtime_errors_stay_plain_model_errors(model: StableDiffusionModel) -> None:
    fail_in_unet(model, lambda: RuntimeError("mat1 and mat2 shapes cannot be multiplied"))

    with pytest.raises(ModelError) as caught:
        model.run(SMALL, QUIET)

    assert type(caught.value) is ModelError
    assert str(caught.value) == "RuntimeError: mat1 and mat2 shapes cannot be multiplied"
    restore_unet(model)
    assert len(model.run(SMALL, QUIET)) == 1


@pytest.mark.parametrize(
    ("exc", "oom", "lost"),
    [
        (MemoryError(), True, False),
        (RuntimeError("CUDA error: out of memory"), True, False),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory"), True, False),
        (RuntimeError("CUSOLVER_STATUS_ALLOC_FAILED"), True, False),
        (RuntimeError("CUDA error: misaligned address"), False, True),
        (RuntimeError("CUDA error: uncorrectable ECC error encountered"), False, True),
        (ValueError("an illegal memory access"), False, False),  # not a RuntimeError
        (RuntimeError("Expected all tensors to be on the same device"), False, False),
        (torch.AcceleratorError("CUDA error: unknown error"), False, True),
        (torch.AcceleratorError("CUDA error: an illegal instruction was encountered"), False, True),
        (torch.AcceleratorError("CUDA error: invalid configuration argument"), False, False),
        (torch.AcceleratorError("CUDA error: no kernel image is available for execution"),
         False, False),
        (torch.AcceleratorError("CUDA error: out of memory"), True, False),
        (RuntimeError("Unable to determine the device handle for GPU0000:1B:00.0: GPU is lost. "
                      "Reboot the system to recover this GPU"), False, True),
        (RuntimeError("CUDA error: GPU has fallen off the bus"), False, True),
        (RuntimeError("CUDA error: the GPU device has fallen off the bus"), False, True),
    ],
)
def test_the_classification_of_cuda_errors(exc: BaseException, oom: bool, lost: bool) -> None:
    assert (is_out_of_memory(torch, exc), is_device_lost(torch, exc)) == (oom, lost)
