"""The durable outbox: whole results or none, across process lifetimes, one worker per folder."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import adapters.outbox.journal as outbox_module
from adapters.local.outbox import InMemoryOutbox
from adapters.outbox.journal import JOURNAL, FileOutbox, peek
from domain.errors import ConfigurationError
from domain.job import Job, JobResult
from domain.ports import ResultOutbox, RunMarks


def reopen(box: FileOutbox) -> FileOutbox:
    """What the next process sees: close this one (its lock goes) and open the folder again."""
    box.close()
    return FileOutbox(box.root)


def test_both_outboxes_conform_to_both_ports(tmp_path: Path) -> None:
    results: list[ResultOutbox] = [FileOutbox(tmp_path / "a"), InMemoryOutbox()]
    marks: list[RunMarks] = [FileOutbox(tmp_path / "b"), InMemoryOutbox()]
    assert len(results) == len(marks) == 2


def test_a_kept_result_is_seen_by_the_next_process_on_the_same_folder(tmp_path: Path) -> None:
    box = FileOutbox(tmp_path)
    box.put(JobResult.success("a", {"x": [1, 2], "text": "näive ✓"}))
    box.put(JobResult.failure("b", "bad"))
    again = reopen(box)
    assert again.pending() == [
        JobResult.success("a", {"x": [1, 2], "text": "näive ✓"}),
        JobResult.failure("b", "bad"),
    ]
    assert peek(tmp_path) == again.pending()


def test_putting_again_replaces_and_removing_forgets(tmp_path: Path) -> None:
    box = FileOutbox(tmp_path)
    box.put(JobResult.success("a", 1))
    box.put(JobResult.success("a", 2))
    assert box.pending() == [JobResult.success("a", 2)]
    box.remove("a")
    box.remove("a")
    assert box.pending() == []
    assert reopen(box).pending() == []


def test_hostile_ids_are_data_never_paths(tmp_path: Path) -> None:
    box = FileOutbox(tmp_path / "box")
    box.put(JobResult.success("../../../escape", 1))
    box.started(Job("../run", {}, 0))
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert files == {f"box/{JOURNAL}", "box/.lock"}
    again = reopen(box)
    assert again.pending()[0].job_id == "../../../escape"
    assert again.interrupted() == [("../run", 1)]


def test_a_record_torn_by_a_crash_is_skipped_and_the_rest_survives(tmp_path: Path) -> None:
    box = FileOutbox(tmp_path)
    box.put(JobResult.success("whole", 1))
    box.close()
    with (tmp_path / JOURNAL).open("ab") as journal:
        journal.write(b'{"put":{"id":"torn","output":')  # the process died mid-write
    again = FileOutbox(tmp_path)
    assert [r.job_id for r in again.pending()] == ["whole"]
    again.put(JobResult.success("after", 2))
    assert [r.job_id for r in reopen(again).pending()] == ["whole", "after"]


def test_running_marks_count_starts_and_survive_abandonment(tmp_path: Path) -> None:
    job = Job("j", {}, 0)
    box = FileOutbox(tmp_path)
    assert box.started(job) == 0
    box = reopen(box)
    assert box.interrupted() == [("j", 1)]
    box.abandoned("j")
    box = reopen(box)
    assert box.interrupted() == []
    assert box.started(job) == 1  # the count survived the crash and the restart
    box.finished("j")
    assert reopen(box).started(job) == 0  # finished: the slate is clean


def test_the_journal_compacts_to_what_is_live(tmp_path: Path) -> None:
    box = FileOutbox(tmp_path, compact_bytes=2000)
    for n in range(200):
        job = Job(f"job-{n}", {}, 0)
        box.started(job)
        box.put(JobResult.success(job.id, {"n": n}))
        box.finished(job.id)
        box.remove(job.id)
    box.put(JobResult.success("kept", "still here"))
    assert (tmp_path / JOURNAL).stat().st_size < 2000
    assert reopen(box).pending() == [JobResult.success("kept", "still here")]


def test_a_second_worker_on_the_same_folder_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    first = FileOutbox(tmp_path)
    with pytest.raises(ConfigurationError, match="in use by another running worker"):
        FileOutbox(tmp_path)
    first.close()
    FileOutbox(tmp_path).close()  # free again once the first one is gone


class CountingOs:
    """``os`` counting the journal's rewrites (``replace``) and syncs."""

    def __init__(self) -> None:
        self.replaced = 0
        self.synced = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def replace(self, src: Any, dst: Any) -> None:
        self.replaced += 1
        os.replace(src, dst)

    def fsync(self, fd: int) -> None:
        self.synced += 1
        os.fsync(fd)


def test_compaction_is_amortised_when_more_than_the_threshold_is_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingOs()
    monkeypatch.setattr(outbox_module, "os", counting)
    box = FileOutbox(tmp_path, compact_bytes=64 * 1024, fsync=False)
    for n in range(100):  # about 100 KB live: past the threshold for good
        box.put(JobResult.success(f"live-{n}", {"text": "l" * 1000}))
    for n in range(1000):  # then deliveries come in slowly, one by one
        box.put(JobResult.success(f"job-{n}", {"n": n}))
        box.remove(f"job-{n}")
    # each compaction rewrites what is live (~100 KB) only after as much again was appended:
    # about 60 KB of records was written after the live ones, so one more compaction at most
    assert counting.replaced <= 3, f"{counting.replaced} rewrites of the journal"
    assert len(reopen(box).pending()) == 100


def test_reading_a_journal_costs_memory_for_what_is_live_not_for_its_length(
    tmp_path: Path,
) -> None:
    box = FileOutbox(tmp_path, fsync=False, compact_bytes=1 << 40)  # never compacts
    for n in range(400):  # 20 MB of records, all delivered: nothing is live
        box.put(JobResult.success(f"job-{n}", {"text": "r" * 50_000}))
        box.remove(f"job-{n}")
    box.close()
    assert (tmp_path / JOURNAL).stat().st_size > 20_000_000
    tracemalloc.start()
    try:
        assert peek(tmp_path) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"reading the journal peaked at {peak / 1e6:.1f} MB"
