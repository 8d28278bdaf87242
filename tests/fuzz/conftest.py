"""The fuzz run's closing line: how many generated cases ran, in all and per test."""

from __future__ import annotations

import pytest

from tests.support.fuzz_kit import CASES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not CASES:
        return
    terminalreporter.section("fuzz cases")
    for name, count in sorted(CASES.items()):
        terminalreporter.write_line(f"{count:>7}  {name}")
    terminalreporter.write_line(f"{sum(CASES.values()):>7}  generated cases in all")
