"""A worker that renews itself: after MAX_JOBS jobs, when its memory grows past MAX_RSS_MB,
when the VRAM left allocated after a job is past MAX_VRAM_FRACTION, or when its model asks.
Every result held is delivered before the exit; no job is taken after the decision; exit 7."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from adapters.host.memory import ProcessMemory
from app.stages import ExitCode
from domain.lifecycle import RecyclePolicy
from domain.ports import JobContext, MemoryGauge
from tests.support.harness import Harness, make_harness, wait_until

MB = 2**20


def submit(h: Harness, count: int) -> list[str]:
    return [h.api.submit({"n": i}, job_id=f"job-{i}") for i in range(count)]


def assert_recycled_after(h: Harness, delivered: list[str], untouched: int) -> None:
    assert h.join(30) is ExitCode.RECYCLED
    assert sorted(h.api.results) == sorted(delivered), "every job taken was delivered"
    assert all(h.api.results[job].ok for job in delivered)
    assert h.api.taken == delivered, "no job taken after the decision"
    assert h.api.queued == untouched
    assert h.outbox.pending() == []
    assert h.pod.terminated == 0  # renewed, not retired: the pod stays


def test_after_max_jobs_jobs_the_worker_delivers_them_takes_no_more_and_exits_7(
    tmp_path: Path,
) -> None:
    h = make_harness(tmp_path, recycle=RecyclePolicy(max_jobs=3))
    jobs = submit(h, 5)
    h.start()
    assert_recycled_after(h, jobs[:3], untouched=2)


def test_with_several_slots_no_take_asks_for_more_than_max_jobs_leaves(tmp_path: Path) -> None:
    h = make_harness(tmp_path, slots=4, recycle=RecyclePolicy(max_jobs=6))
    jobs = submit(h, 10)
    h.start()
    assert h.join(30) is ExitCode.RECYCLED
    assert len(h.api.taken) == 6
    assert sum(h.api.takes_batch_sizes) >= 6
    assert all(size <= 4 for size in h.api.takes_batch_sizes)
    assert set(h.api.results) == set(h.api.taken) and set(h.api.taken) <= set(jobs)
    assert h.api.queued == 4


class LeakingModel:
    """Keeps 40 MB of every job's work, on purpose (pages touched, so they are resident)."""

    def __init__(self) -> None:
        self.kept: list[bytes] = []

    def load(self) -> None:
        pass

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        self.kept.append(b"\x01" * (40 * MB))
        return {"kept_mb": 40 * len(self.kept)}


def test_a_model_that_leaks_host_memory_is_renewed_once_rss_passes_the_limit(
    tmp_path: Path,
) -> None:
    baseline = ProcessMemory().rss_bytes()
    assert baseline is not None
    model = LeakingModel()
    h = make_harness(tmp_path, model=model,
                     recycle=RecyclePolicy(max_rss_bytes=baseline + 100 * MB))
    jobs = submit(h, 12)
    h.start()
    assert h.join(30) is ExitCode.RECYCLED
    delivered = h.api.taken
    assert 3 <= len(delivered) <= 5  # 40 MB a job: past +100 MB after the 3rd job (give or take)
    assert delivered == jobs[:len(delivered)]
    assert sorted(h.api.results) == sorted(delivered)
    assert h.api.queued == 12 - len(delivered)
    model.kept.clear()


class ScriptedVram:
    """A ``MemoryGauge`` whose VRAM readings a test scripts: one per job, then the last."""

    def __init__(self, readings: list[float]) -> None:
        self.readings = list(readings)
        self.reads = 0

    def rss_bytes(self) -> int | None:
        return 100 * MB

    def vram_fraction(self) -> float | None:
        self.reads += 1
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


def test_vram_left_allocated_after_a_job_past_the_fraction_renews_the_worker(
    tmp_path: Path,
) -> None:
    vram = ScriptedVram([0.35, 0.41, 0.93, 0.2])
    gauge: MemoryGauge = vram
    h = make_harness(tmp_path, memory=gauge, recycle=RecyclePolicy(max_vram_fraction=0.9))
    jobs = submit(h, 6)
    h.start()
    assert_recycled_after(h, jobs[:3], untouched=3)
    assert vram.reads == 3  # read after each job, and only with the limit set


class AsksAfterSecondJob:
    def __init__(self) -> None:
        self.runs = 0

    def load(self) -> None:
        pass

    def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
        self.runs += 1
        if self.runs == 2:
            ctx.ask_for_fresh_worker()  # type: ignore[attr-defined]
        return job_input


def test_a_model_that_asks_for_a_fresh_worker_gets_its_result_delivered_then_exit_7(
    tmp_path: Path,
) -> None:
    h = make_harness(tmp_path, model=AsksAfterSecondJob())
    jobs = submit(h, 4)
    h.start()
    assert_recycled_after(h, jobs[:2], untouched=2)


def test_jobs_held_when_the_decision_is_made_are_run_and_delivered(tmp_path: Path) -> None:
    gate = threading.Event()

    class Slow:
        def load(self) -> None:
            pass

        def run(self, job_input: dict[str, Any], ctx: JobContext) -> Any:
            gate.wait(30)
            return job_input

    h = make_harness(tmp_path, model=Slow(), slots=1, recycle=RecyclePolicy(max_jobs=2))
    h.api.submit_batch([{"id": "a", "input": {}}, {"id": "b", "input": {}}])
    h.api.submit({}, job_id="c")
    h.start()
    wait_until(lambda: h.api.taken == ["a", "b"], timeout=30, what="the batch taken")
    gate.set()
    assert_recycled_after(h, ["a", "b"], untouched=1)


def test_a_sigterm_before_the_limit_exits_0_as_ever(tmp_path: Path) -> None:
    h = make_harness(tmp_path, recycle=RecyclePolicy(max_jobs=100))
    submit(h, 2)
    h.start()
    assert h.api.wait_for_results(2)
    assert h.stop() is ExitCode.OK
