"""The durable outbox: whole results or none, across process lifetimes."""

from __future__ import annotations

from pathlib import Path

from adapters.outbox import FileOutbox, InMemoryOutbox
from domain.job import Job, JobResult
from domain.ports import Outbox


def test_both_outboxes_conform_to_the_port(tmp_path: Path) -> None:
    ports: list[Outbox] = [FileOutbox(tmp_path), InMemoryOutbox()]
    assert len(ports) == 2


def test_a_kept_result_is_seen_by_a_new_outbox_on_the_same_folder(tmp_path: Path) -> None:
    FileOutbox(tmp_path).put(JobResult.success("a", {"x": [1, 2]}))
    FileOutbox(tmp_path).put(JobResult.failure("b", "bad"))
    pending = FileOutbox(tmp_path).pending()
    assert sorted(pending, key=lambda r: r.job_id) == [
        JobResult.success("a", {"x": [1, 2]}),
        JobResult.failure("b", "bad"),
    ]


def test_putting_again_replaces_and_removing_forgets(tmp_path: Path) -> None:
    box = FileOutbox(tmp_path)
    box.put(JobResult.success("a", 1))
    box.put(JobResult.success("a", 2))
    assert box.pending() == [JobResult.success("a", 2)]
    box.remove("a")
    box.remove("a")
    assert box.pending() == []


def test_hostile_ids_stay_inside_the_outbox_folder(tmp_path: Path) -> None:
    box = FileOutbox(tmp_path / "box")
    box.put(JobResult.success("../../../escape", 1))
    box.started(Job("../run", {}, 0))
    files = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert all(str(f).startswith("box/") for f in files)
    assert box.pending()[0].job_id == "../../../escape"
    assert box.interrupted() == [("../run", 1)]


def test_leftover_temporary_files_and_garbage_are_skipped(tmp_path: Path) -> None:
    box = FileOutbox(tmp_path)
    (tmp_path / "results" / ".half-written.tmp").write_text("{")
    (tmp_path / "results" / "garbage.json").write_text("not json")
    box.put(JobResult.success("ok", 1))
    assert [r.job_id for r in box.pending()] == ["ok"]


def test_running_marks_count_starts_and_survive_abandonment(tmp_path: Path) -> None:
    job = Job("j", {}, 0)
    box = FileOutbox(tmp_path)
    assert box.started(job) == 0
    assert FileOutbox(tmp_path).interrupted() == [("j", 1)]
    box.abandoned("j")
    assert box.interrupted() == []
    assert box.started(job) == 1  # the count survived
    box.finished("j")
    assert box.started(job) == 0  # finished: the slate is clean
