"""Which thread does what: the model loads and runs jobs on one thread; PNGs are encoded on the
store thread; a lost device ends the worker with its documented exit code after the job's result.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion import output_images as images
from app.stages import ExitCode
from domain.errors import DeviceLost
from domain.execution import DetachedContext
from domain.ports import JobContext
from tests.support.harness import make_harness


class ThreadRecordingModel:
    """Records the thread that loads it and the thread of every job."""

    def __init__(self) -> None:
        self.load_thread: int | None = None
        self.job_threads: list[int] = []

    def load(self) -> None:
        self.load_thread = threading.get_ident()

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        self.job_threads.append(threading.get_ident())
        return {"ok": True}


def test_the_model_is_loaded_on_the_thread_that_runs_its_jobs(tmp_path: Path) -> None:
    model = ThreadRecordingModel()
    h = make_harness(tmp_path, model=model).start()
    for n in range(3):
        h.api.submit({"n": n})
    assert h.api.wait_for_results(3)
    h.stop()

    assert model.load_thread is not None
    assert model.load_thread != threading.get_ident()
    assert model.job_threads == [model.load_thread] * 3


def test_png_encoding_runs_in_the_store_stage_never_on_the_model_thread(
    tmp_path: Path, tiny_sd_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded_on: list[str] = []
    real_encode = images.encode_png

    def recording_encode(image: Any, level: int = images.PNG_COMPRESS_LEVEL) -> bytes:
        encoded_on.append(threading.current_thread().name)
        return real_encode(image, level)

    monkeypatch.setattr(images, "encode_png", recording_encode)
    h = make_harness(tmp_path, model=tiny_sd_model).start()
    h.api.submit({"prompt": "a boat", "width": 64, "height": 64, "num_inference_steps": 2,
                  "num_outputs": 2, "seed": 3}, job_id="j")
    assert h.api.wait_for_results(1, timeout=120)
    h.stop()

    output = h.api.results["j"].output
    assert [Path(item["image"]).read_bytes()[:4] for item in output] == [b"\x89PNG"] * 2
    assert encoded_on == ["store-upload", "store-upload"]  # the store stage's upload thread


def test_png_compression_level_is_the_models_setting(tiny_sd_model: Any) -> None:
    job = {"prompt": "a boat", "width": 64, "height": 64, "num_inference_steps": 2, "seed": 3}
    fast = tiny_sd_model.run(job, DetachedContext("j"))[0]["image"]
    saved = tiny_sd_model.png_compression
    tiny_sd_model.png_compression = 9
    try:
        small = tiny_sd_model.run(job, DetachedContext("j"))[0]["image"]
    finally:
        tiny_sd_model.png_compression = saved

    assert fast.data != small.data  # the same pixels, another zlib level
    assert images.encode_png(images_of(fast), 9) == small.data


def images_of(artifact: Any) -> Any:
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(artifact.data)))


class LosingModel:
    """The first job finds the device dead; any later job would too."""

    def __init__(self) -> None:
        self.runs = 0

    def load(self) -> None:
        return None

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        self.runs += 1
        raise DeviceLost("the GPU is unusable (AcceleratorError: CUDA error: an illegal memory "
                         "access was encountered); this worker stops so that the pod restarts")


def test_a_lost_device_fails_its_job_then_the_worker_exits_with_code_6(tmp_path: Path) -> None:
    model = LosingModel()
    h = make_harness(tmp_path, model=model).start()
    h.api.submit({"n": 1}, job_id="doomed")

    assert h.api.wait_for_results(1)
    assert h.join(timeout=30) is ExitCode.DEVICE_LOST
    assert int(ExitCode.DEVICE_LOST) == 6  # the code documented in the README
    error = h.api.results["doomed"].error or ""
    assert "illegal memory access" in error
    assert model.runs == 1
