"""Start-up phases timed on a test's clock, the start-up log's tail, and a failed start's error."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from adapters.clock import ManualClock
from app.startup import (
    MAX_FAILURE_CHARS,
    MAX_PHASES,
    LogTail,
    StartupPhases,
    accepts_report,
    clean_phase,
    failure_text,
)
from domain.ports import StartupReport
from domain.scrubbing import Scrubber

SECRET = "sk-live-4f9a2c7e1b"


def test_each_phase_is_timed_from_its_start_to_the_next_and_the_running_one_counts_so_far(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    phases = StartupPhases(clock)
    report: StartupReport = phases
    caplog.set_level(logging.INFO, logger="podworker.startup")
    report.phase("import")
    clock.advance(2.0)
    report.phase("weights")
    clock.advance(5.0)
    assert phases.current() == ("weights", 5.0)
    assert phases.seconds() == {"import": 2.0, "weights": 5.0}
    report.phase("device")
    clock.advance(1.0)
    assert phases.finish() == 8.0
    assert phases.seconds() == {"import": 2.0, "weights": 5.0, "device": 1.0}
    assert phases.current() == (None, 0.0)
    assert phases.done.is_set()
    logged = [(r.phase, r.seconds) for r in caplog.records  # type: ignore[attr-defined]
              if getattr(r, "event", None) == "startup_phase"]
    assert logged == [("import", 2.0), ("weights", 5.0), ("device", 1.0)]


def test_a_model_that_reports_nothing_has_one_phase_named_load() -> None:
    clock = ManualClock()
    phases = StartupPhases(clock)
    phases.phase("import")
    clock.advance(1.0)
    phases.begin_load()
    clock.advance(3.0)
    assert phases.current() == ("load", 3.0)
    phases.finish()
    assert phases.seconds() == {"import": 1.0, "load": 3.0}


def test_the_models_first_phase_takes_over_the_load_phase_with_its_time() -> None:
    clock = ManualClock()
    phases = StartupPhases(clock)
    phases.phase("import")
    clock.advance(1.0)
    phases.begin_load()
    clock.advance(0.5)
    phases.phase("import")  # the model imports torch: more import time
    clock.advance(2.0)
    phases.phase("weights")
    clock.advance(1.0)
    phases.finish()
    assert phases.seconds() == {"import": 3.5, "weights": 1.0}


def test_a_report_after_the_start_ended_is_ignored() -> None:
    clock = ManualClock()
    phases = StartupPhases(clock)
    phases.phase("weights")
    clock.advance(900.0)
    phases.finish()  # the deadline
    clock.advance(60.0)
    phases.phase("device")  # the load went on, left behind
    assert phases.seconds() == {"weights": 900.0}
    assert phases.elapsed() == 900.0


def test_phase_names_are_cleaned_and_a_model_cannot_grow_the_books_without_bound() -> None:
    assert clean_phase("Warm-Up (CUDA graphs)") == "warm_up_cuda_graphs"
    assert clean_phase("x" * 100) == "x" * 32
    assert clean_phase("!!!") == "unnamed"
    phases = StartupPhases(ManualClock())
    for i in range(1000):
        phases.phase(f"step {i}")
    assert len(phases.seconds()) == MAX_PHASES


def test_the_log_tail_keeps_the_last_lines_scrubbed_and_cut() -> None:
    tail = LogTail(Scrubber([SECRET]), lines=3)
    logger = logging.getLogger("tests.tail")
    logger.addHandler(tail)
    try:
        logger.setLevel(logging.INFO)
        for i in range(5):
            logger.warning("line %d with key %s", i, SECRET)
        logger.error("x" * 1000)
    finally:
        logger.removeHandler(tail)
    tail.handle(logging.makeLogRecord({"msg": "%s %s", "args": ("one",)}))  # skipped
    lines = tail.lines()
    assert len(lines) == 3
    assert lines[0] == "warning tests.tail: line 3 with key [redacted]"
    assert len(lines[2]) == 300
    assert all(SECRET[:6] not in line for line in lines)


def test_a_failed_starts_error_names_the_phase_and_the_error_and_keeps_the_newest_lines() -> None:
    scrub = Scrubber([SECRET])
    tail = [f"info model: line {i} " + "y" * 250 for i in range(40)]
    text = failure_text(phase="weights", seconds=12.34, error=f"OSError: denied {SECRET}",
                        tail=tail, scrub=scrub)
    assert text.startswith("the worker could not start: OSError: denied [redacted] "
                           "(phase weights, after 12.3 s); last lines of the start-up log:\n")
    assert len(text) <= MAX_FAILURE_CHARS
    assert text.endswith(tail[-1])
    assert "line 0 " not in text
    assert failure_text(phase="load", seconds=1.0, error="E", tail=[], scrub=scrub) == (
        "the worker could not start: E (phase load, after 1.0 s)")


class NoArgument:
    def load(self) -> None: ...


class Optional:
    def load(self, startup: Any = None) -> None: ...


class KeywordOnly:
    def load(self, *, startup: Any = None) -> None: ...


class Starred:
    def load(self, *args: Any) -> None: ...


def test_the_report_is_passed_to_a_load_that_takes_a_positional_argument_only() -> None:
    assert not accepts_report(NoArgument().load)
    assert accepts_report(Optional().load)
    assert not accepts_report(KeywordOnly().load)
    assert accepts_report(Starred().load)
