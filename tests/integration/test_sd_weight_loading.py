"""Reading the weights: straight onto the GPU where diffusers can, else on the host.

On this CPU-only machine diffusers itself refuses ``device_map="cuda"`` (its supported maps are
the devices it sees), which is what an older diffusers or a missing ``accelerate`` does on a GPU
pod: the worker must then read the weights on the host, with a warning, and serve as before.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from adapters.stable_diffusion.device_setup import read_weights
from adapters.stable_diffusion.families import detect_family
from adapters.stable_diffusion.model import StableDiffusionModel

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


def test_weights_that_cannot_load_straight_onto_the_gpu_are_read_on_the_host_with_a_warning(
    tiny_sd_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    spec = detect_family(str(tiny_sd_path))

    with caplog.at_level(logging.WARNING, logger="podworker.model"):
        pipe = read_weights(diffusers, spec, str(tiny_sd_path), dtype=torch.float32,
                            allow_download=False, straight_to="cuda")

    assert {p.device.type for p in pipe.unet.parameters()} == {"cpu"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("loading the weights straight onto cuda failed (")
    assert warnings[0].endswith("): loading them on the host, then moving them")


def test_weights_for_a_numbered_cuda_device_are_read_on_the_host_with_a_warning(
    tiny_sd_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    spec = detect_family(str(tiny_sd_path))

    with caplog.at_level(logging.WARNING, logger="podworker.model"):
        pipe = read_weights(diffusers, spec, str(tiny_sd_path), dtype=torch.float32,
                            allow_download=False, straight_to="cuda:1")

    assert {p.device.type for p in pipe.unet.parameters()} == {"cpu"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["the weights are read on the host, then moved to cuda:1 (they load "
                        "straight only onto 'cuda', the current device)"]


def test_on_the_cpu_the_weights_are_read_on_the_host_without_a_word(
    tiny_sd_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    model = StableDiffusionModel(str(tiny_sd_path), device="cpu")

    with caplog.at_level(logging.WARNING, logger="podworker.model"):
        model.load()

    assert not [r for r in caplog.records if "straight onto" in r.getMessage()]
    assert model.setup is not None and not model.setup.offloaded
