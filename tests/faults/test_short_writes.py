"""The outbox journal written by a kernel that takes part of each write (issue 11, item 9).

``os.write`` may write fewer bytes than asked (a signal, a full pipe, some filesystems); every
journal write, the compaction's too, must loop until the whole record is down. A short write is
simulated in this process: the outbox module's ``os`` is swapped for one whose ``write`` takes at
most 64 bytes a call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import adapters.outbox.journal as outbox_module
from adapters.outbox.journal import FileOutbox, peek
from domain.job import JobResult

MOST = 64


class ShortWritingOs:
    """``os`` with a ``write`` that writes at most ``MOST`` bytes per call."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def write(fd: int, data: Any) -> int:
        return os.write(fd, bytes(data)[:MOST])


def test_kept_results_survive_a_reopen_when_every_write_is_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "os", ShortWritingOs())
    root = tmp_path / "outbox"
    results = [JobResult.success(f"job-{n}", {"text": "x" * 300, "n": n}) for n in range(3)]
    first = FileOutbox(root, fsync=False)
    for result in results:
        first.put(result)
    first.close()
    assert peek(root) == results  # appends loop over short writes

    second = FileOutbox(root, fsync=False)  # opening compacts: the journal is rewritten
    second.close()
    assert peek(root) == results, "results lost when the journal was compacted with short writes"
