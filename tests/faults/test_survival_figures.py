"""The figures the README's "What podworker survives" table gives for retries are the code's:
each named schedule in ``domain.waiting`` (issue 11, item 9: the README once promised 8 tries in
25 s for result posts while the code made 4 in 10 s)."""

from __future__ import annotations

import pytest

from domain import waiting
from tests.faults.test_survival_table import table


def row_about(words: str) -> str:
    rows = [line for line in table().splitlines()
            if line.startswith("| ") and line.lower().startswith(f"| {words}")]
    assert len(rows) == 1, f"expected one row starting {words!r}, found {rows}"
    return rows[0]


@pytest.mark.parametrize(
    ("row_start", "schedule"),
    [("result post refused", waiting.RESULT_POST),
     ("job api refusing connections", waiting.TAKE)],
)
def test_the_readme_gives_the_backoff_each_schedule_follows(
    row_start: str, schedule: waiting.Schedule
) -> None:
    row = row_about(row_start)
    figures = f"{schedule.initial:g} s doubling to {schedule.maximum:g} s"
    assert figures in row, f"README row {row_start!r} does not say {figures!r}: {row}"
