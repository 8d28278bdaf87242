"""The Stable Diffusion adapter reports its start-up phases, on its device thread, and a
warm-up that fails is reported by the worker as the warm-up's failure."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from adapters.clock import SystemClock
from adapters.stable_diffusion import model as sd_model
from adapters.stable_diffusion.acceleration import CompileOptions
from adapters.stable_diffusion.model import StableDiffusionModel
from app.stages import ExitCode
from app.startup import StartupPhases
from domain.errors import ModelError
from tests.support.harness import make_harness

pytest.importorskip("torch")


class Recorder:
    """A ``StartupReport`` that records each phase and the thread it came from, and times it."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, str]] = []
        self.timed = StartupPhases(SystemClock())

    def phase(self, name: str) -> None:
        self.phases.append((name, threading.current_thread().name))
        self.timed.phase(name)


def test_a_cpu_load_goes_through_import_weights_and_device_on_the_device_thread(
    tiny_sd_path: Path,
) -> None:
    report = Recorder()
    StableDiffusionModel(str(tiny_sd_path), device="cpu").load(report)
    assert report.phases == [("import", "model-device"), ("weights", "model-device"),
                             ("device", "model-device")]  # no warm-up on a CPU, uncompiled
    report.timed.finish()
    assert report.timed.seconds()["weights"] > 0


def failing_warm_up(*args: Any, **kwargs: Any) -> None:
    raise ModelError("warm-up failed: the compiled UNet refused 512x512")


def test_a_warm_up_that_fails_fails_one_job_naming_the_warmup_phase(
    tiny_sd_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sd_model, "warm_up", failing_warm_up)
    model = StableDiffusionModel(str(tiny_sd_path), device="cpu",
                                 compile=CompileOptions(backend="eager"))
    h = make_harness(tmp_path, model=model)
    h.api.submit({"prompt": "a cat"}, job_id="told")
    h.api.submit({"prompt": "a dog"}, job_id="untouched")
    h.start()
    assert h.join(60) is ExitCode.MODEL_LOAD
    assert h.api.taken == ["told"]
    error = h.api.results["told"].error or ""
    assert error.startswith("the worker could not start: warm-up failed: the compiled UNet")
    assert "(phase warmup, after " in error
    assert list(h.worker.startup.seconds()) == ["import", "weights", "device", "warmup"]
