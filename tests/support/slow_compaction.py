"""``python -m tests.support.slow_compaction MARKER ARGS...``: the real worker (``python -m app
ARGS...``) whose outbox compaction, once it has begun writing its temporary copy, touches
``MARKER`` and then writes slowly (a tenth of a second a piece), so a test can send a signal
while the start-up compaction is surely under way. Only the pace changes; the code is the
product's.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import adapters.outbox.journal as journal


def slow_down(marker: Path) -> None:
    real = journal._write_all
    pause = threading.Event()

    def slow_write_all(fd: int, data: bytes) -> None:
        marker.touch()
        for start in range(0, len(data), 4096):
            real(fd, data[start:start + 4096])
            pause.wait(0.1)  # the pace of a slow disk (a stand-in, not a wait for an event)

    journal._write_all = slow_write_all


if __name__ == "__main__":
    slow_down(Path(sys.argv[1]))
    from app.cli import main

    sys.exit(main(sys.argv[2:]))
