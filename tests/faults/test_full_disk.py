"""The disk under STATE_DIR filling up for real (issue 26, items 1 and 10).

A real full filesystem (a small tmpfs, ``tests.support.small_disk``) takes the part of a write
that fits and fails the rest: the journal must still end at a whole record, and a later record
must never merge with the torn one. A disk that is full when the worker starts must not stop it
(no "invalid setting", no crash loop): what the journal keeps is delivered.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from adapters.outbox.journal import JOURNAL, FileOutbox, peek
from domain.job import Job, JobResult
from tests.support.fault_kit import Rig, poll_until
from tests.support.small_disk import fill, free_bytes


def ids(results: list[JobResult]) -> list[str]:
    return [result.job_id for result in results]


def test_a_write_torn_by_a_full_disk_leaves_the_journal_whole_and_the_next_result_survives(
    small_disk: Path,
) -> None:
    root = small_disk / "outbox"
    box = FileOutbox(root)
    box.put(JobResult.success("a1", {"n": 1}))
    filler = fill(small_disk, leave=4096)
    big = JobResult.success("a2", {"text": "x" * 64 * 1024})  # more than is left: torn
    with pytest.raises(OSError):
        box.put(big)
    assert (root / JOURNAL).read_bytes().endswith(b"\n"), "the journal ends mid-record"
    filler.unlink()  # space comes back
    box.put(JobResult.success("a3", {"n": 3}))
    box.close()
    assert ids(peek(root)) == ["a1", "a3"]
    assert ids(FileOutbox(root).pending()) == ["a1", "a3"]


def test_running_marks_torn_by_a_full_disk_never_merge_with_the_next_record(
    small_disk: Path,
) -> None:
    root = small_disk / "outbox"
    box = FileOutbox(root)
    filler = fill(small_disk, leave=4096)
    for n in range(50):  # a few go through, one partly, the rest not at all
        with contextlib.suppress(OSError):
            box.started(Job(f"job-{n}-" + "y" * 500, {}, 0))
    filler.unlink()
    box.put(JobResult.success("after", 1))
    box.close()
    assert "after" in ids(peek(root))


def test_a_journal_on_a_disk_full_at_start_opens_and_keeps_its_results(small_disk: Path) -> None:
    root = small_disk / "outbox"
    box = FileOutbox(root)
    for n in range(20):
        box.put(JobResult.success(f"kept-{n}", {"text": "z" * 2000}))
        box.put(JobResult.success(f"gone-{n}", {"text": "z" * 2000}))
        box.remove(f"gone-{n}")
    box.close()
    fill(small_disk, leave=0)  # no room for the start-up compaction's copy
    assert free_bytes(small_disk) < (root / JOURNAL).stat().st_size
    again = FileOutbox(root)
    assert ids(again.pending()) == [f"kept-{n}" for n in range(20)]
    assert not list(root.glob("*.tmp")), "the failed compaction left its copy behind"
    again.close()


def test_a_worker_starting_on_a_full_disk_delivers_what_its_journal_keeps_and_keeps_working(
    rig: Rig, small_disk: Path,
) -> None:
    state = small_disk / "state"
    kept = [rig.submit({"n": n}) for n in range(3)]
    assert len(rig.api.hand_out("the-worker-before", 3)) == 3  # taken by a worker now gone
    box = FileOutbox(state / "outbox")
    for job_id in kept:
        box.put(JobResult.success(job_id, {"kept": job_id, "pad": "p" * 4000}))
    box.close()
    fill(small_disk, leave=0)
    worker = rig.start(STATE_DIR=str(state))
    for job_id in kept:
        assert rig.wait_result(job_id)["output"]["kept"] == job_id
    fresh = rig.submit({"n": "fresh"})
    assert rig.wait_result(fresh)["output"] == {"n": "fresh"}
    assert worker.proc.poll() is None, f"the worker stopped:\n{worker.log_path.read_text()}"
    poll_until(lambda: worker.saw("outbox_compaction_skipped"), 10, "the compaction warning")
    assert worker.terminate() == 0
    assert rig.api.duplicates == []
