"""Where the weights go: model CPU offload when they (and room to run) exceed the GPU's free
memory, read from the safetensors headers in the dtype they will be loaded in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion import placement
from adapters.stable_diffusion.device_setup import offload_needed, place_and_speed_up

GIB = 2**30


def test_offload_is_chosen_when_the_weights_exceed_the_free_memory() -> None:
    assert placement.needs_offload(weights=30 * GIB, free=24 * GIB)
    assert placement.needs_offload(weights=23 * GIB, free=24 * GIB)  # no room to run
    assert not placement.needs_offload(weights=5 * GIB, free=80 * GIB)


def test_the_weights_are_counted_in_the_dtype_they_will_be_loaded_in(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1000, 1000), "steps": torch.zeros(10, dtype=torch.int64)},
              str(tmp_path / "model.safetensors"))

    assert placement.weights_bytes(tmp_path, 2) == 2_000_000 + 80
    assert placement.weights_bytes(tmp_path, 4) == 4_000_000 + 80


class OffloadRecorder:
    """A pipeline stand-in that records whether it was moved or offloaded."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.vae: Any = None

    def to(self, device: str) -> OffloadRecorder:
        self.calls.append(f"to {device}")
        return self

    def enable_model_cpu_offload(self, device: str) -> None:
        self.calls.append(f"offload {device}")


def test_a_model_larger_than_the_injected_free_memory_loads_with_model_cpu_offload(
    tiny_sd_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr("adapters.stable_diffusion.device_setup.speed_up", lambda *a, **k: None)
    monkeypatch.setattr("adapters.stable_diffusion.device_setup.fp16_safe_vae",
                        lambda *a, **k: None)
    monkeypatch.setattr("adapters.stable_diffusion.device_setup.check_attention",
                        lambda *a, **k: None)
    options: dict[str, Any] = {"device": "cuda", "dtype": torch.float16,
                               "channels_last": True, "fuse_qkv": False, "batch_rows": 1}

    def offload(free: int) -> bool:
        return offload_needed(torch, source=str(tiny_sd_path), device="cuda",
                              dtype=torch.float16, free_bytes=lambda: free)

    small, small_setup = place_and_speed_up(torch, OffloadRecorder(), **options,
                                            offload=offload(1 * GIB))
    roomy, roomy_setup = place_and_speed_up(torch, OffloadRecorder(), **options,
                                            offload=offload(80 * GIB))

    assert small.calls == ["offload cuda"] and small_setup.offloaded
    assert roomy.calls == ["to cuda"] and not roomy_setup.offloaded


def test_offload_is_decided_from_the_files_before_any_weight_is_read(tiny_sd_path: Path) -> None:
    torch = pytest.importorskip("torch")
    options: dict[str, Any] = {"source": str(tiny_sd_path), "dtype": torch.float16}

    assert offload_needed(torch, device="cuda", free_bytes=lambda: 1 * GIB, **options)
    assert not offload_needed(torch, device="cuda", free_bytes=lambda: 80 * GIB, **options)
    assert not offload_needed(torch, device="cpu", free_bytes=lambda: 0, **options)

