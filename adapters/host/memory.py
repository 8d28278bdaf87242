"""The process's memory, read after each job: does the worker need renewing?

``ProcessMemory`` conforms to ``domain.ports.MemoryGauge``:

- **resident memory** from ``/proc/self/statm`` (Linux; one small read, about 10 µs): the pages
  this process holds in RAM now, which is what grows when a model leaks host memory (Python's
  ``resource`` module only gives the peak);
- **accelerator memory** from torch's CUDA allocator, only when this process has already
  imported torch and started CUDA (reading it never starts CUDA, or imports torch, on the
  controller's thread): memory held by live tensors (``memory_allocated``, not the allocator's
  cache, which is kept on purpose), as a share of the device's total, the largest share over
  the process's devices.

Every reading that cannot be made is ``None``; nothing here raises.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

STATM = Path("/proc/self/statm")


class ProcessMemory:
    """This process's resident memory and its CUDA allocation."""

    def __init__(self, statm: Path = STATM) -> None:
        self._statm = statm
        try:
            self._page = os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            self._page = 4096

    def rss_bytes(self) -> int | None:
        try:
            fields = self._statm.read_text().split()
            return int(fields[1]) * self._page
        except (OSError, ValueError, IndexError):
            return None

    def vram_fraction(self) -> float | None:
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        try:
            cuda = torch.cuda
            if not cuda.is_initialized():
                return None
            shares = [
                cuda.memory_allocated(index) / cuda.get_device_properties(index).total_memory
                for index in range(cuda.device_count())
            ]
        except Exception:  # a broken or lost device: the device-lost path reports it
            return None
        return max(shares, default=None)
