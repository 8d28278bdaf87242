"""The host adapters: the process's memory readings and the record of failed starts in
``STATE_DIR`` (whole or absent, never a reason to fail)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from adapters.host.memory import ProcessMemory
from adapters.host.start_history import FILE, MAX_FILE_BYTES, FileStartHistory
from adapters.local.start_history import InMemoryStartHistory
from domain.lifecycle import FailedStarts
from domain.ports import MemoryGauge, StartHistory

MB = 2**20


def test_resident_memory_grows_by_what_the_process_touches() -> None:
    memory: MemoryGauge = ProcessMemory()
    before = memory.rss_bytes()
    assert before is not None and before > 10 * MB
    kept = b"\x01" * (64 * MB)
    after = memory.rss_bytes()
    assert after is not None and after - before >= 60 * MB
    del kept


def test_a_memory_reading_that_cannot_be_made_is_none(tmp_path: Path) -> None:
    assert ProcessMemory(statm=tmp_path / "missing").rss_bytes() is None
    (tmp_path / "statm").write_text("garbage")
    assert ProcessMemory(statm=tmp_path / "statm").rss_bytes() is None
    assert ProcessMemory().vram_fraction() is None  # no CUDA started in this process


@pytest.mark.parametrize("make", [FileStartHistory, None], ids=["file", "in-memory"])
def test_failures_count_up_with_the_last_phase_and_error_and_a_success_resets(
    tmp_path: Path, make: type[FileStartHistory] | None
) -> None:
    history: StartHistory = make(tmp_path) if make else InMemoryStartHistory()
    assert history.failed_in_a_row() == FailedStarts()
    history.record_failure("weights", "OSError: weights not found")
    history.record_failure("warmup", "RuntimeError: capture refused")
    assert history.failed_in_a_row() == FailedStarts(2, "warmup", "RuntimeError: capture refused")
    history.record_success()
    assert history.failed_in_a_row() == FailedStarts()


def test_the_record_survives_the_process_as_a_file_replaced_whole(tmp_path: Path) -> None:
    FileStartHistory(tmp_path).record_failure("device", "x" * 10_000)
    record = json.loads((tmp_path / FILE).read_text())
    assert record["failed_in_a_row"] == 1 and len(record["error"]) == 4000
    assert FileStartHistory(tmp_path).failed_in_a_row().count == 1  # a new process reads it
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE]  # no temporary left behind


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2]", b'{"failed_in_a_row": "3"}', b'{"failed_in_a_row": true}',
     b'{"failed_in_a_row": -4}', b" " * (MAX_FILE_BYTES + 1)],
    ids=["torn", "a list", "a string count", "a bool count", "negative", "too large"],
)
def test_a_record_that_cannot_be_read_counts_as_no_failed_start(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / FILE).write_bytes(content)
    history = FileStartHistory(tmp_path)
    assert history.failed_in_a_row() == FailedStarts()
    history.record_failure("load", "E")
    assert history.failed_in_a_row().count == 1


def test_a_state_dir_that_is_a_file_is_logged_and_the_start_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    (tmp_path / "state").write_text("not a folder")
    history = FileStartHistory(tmp_path / "state")
    history.record_failure("load", "E")
    assert history.failed_in_a_row() == FailedStarts()
    assert any(getattr(r, "event", "") == "start_history_unwritable" for r in caplog.records)
