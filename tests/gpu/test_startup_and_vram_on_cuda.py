"""What only a GPU shows of start-up and renewal: the Stable Diffusion load on CUDA goes through
all four phases (``warmup`` included), and ``ProcessMemory`` reads the VRAM that live tensors
hold (not the allocator's cache), without starting CUDA itself. Skipped where no GPU is."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from adapters.host.memory import ProcessMemory
from adapters.stable_diffusion.model import StableDiffusionModel

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

GIB = 2**30


class Recorder:
    def __init__(self) -> None:
        self.phases: list[tuple[str, str]] = []

    def phase(self, name: str) -> None:
        self.phases.append((name, threading.current_thread().name))


def test_a_cuda_load_reports_import_weights_device_and_warmup_on_the_device_thread(
    tiny_sd_path: Path,
) -> None:
    report = Recorder()
    StableDiffusionModel(str(tiny_sd_path), device="cuda").load(report)
    assert [name for name, _ in report.phases] == ["import", "weights", "device", "warmup"]
    assert {thread for _, thread in report.phases} == {"model-device"}


def test_the_vram_reading_follows_live_tensors_and_not_the_allocators_cache() -> None:
    memory = ProcessMemory()
    total = torch.cuda.get_device_properties(0).total_memory
    before = memory.vram_fraction() or 0.0
    block = torch.empty(2 * GIB, dtype=torch.uint8, device="cuda")
    held = memory.vram_fraction()
    assert held is not None
    assert held - before == pytest.approx(2 * GIB / total, rel=0.05)
    del block  # back to the allocator's cache, which it keeps on purpose
    after = memory.vram_fraction()
    assert after is not None and after == pytest.approx(before, abs=0.01)
    assert torch.cuda.memory_reserved(0) >= 2 * GIB  # cached, and not counted


def test_reading_vram_never_starts_cuda_in_a_process_that_has_not() -> None:
    code = (
        "import torch\n"
        "from adapters.host.memory import ProcessMemory\n"
        "print(ProcessMemory().vram_fraction(), torch.cuda.is_initialized())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    assert out == ["None", "False"]
