"""The figures the README's "What podworker survives" table gives for result posts are the
code's: the tries and the time ``adapters.retrying.result_delivery`` allows (issue 11, item 9).
"""

from __future__ import annotations

import re

from tenacity.stop import stop_after_attempt, stop_after_delay, stop_any

from adapters import retrying
from tests.faults.test_survival_table import table


def result_post_row() -> str:
    rows = [line for line in table().splitlines()
            if line.startswith("| ") and "result post" in line.lower() and "tries" in line]
    assert len(rows) == 1, f"expected one 'Result post ... tries' row, found {rows}"
    return rows[0]


def test_the_readme_gives_the_tries_and_seconds_of_the_result_post_retry_policy() -> None:
    row = result_post_row()
    tries = re.search(r"(\d+) tries", row)
    seconds = re.search(r"(\d+(?:\.\d+)?) ?s\b", row[tries.end():] if tries else row)
    assert tries and seconds, f"no 'N tries, about S s' in {row!r}"
    stop = retrying.result_delivery(sleep=lambda s: None).stop
    parts = stop.stops if isinstance(stop, stop_any) else (stop,)
    attempts = [p.max_attempt_number for p in parts if isinstance(p, stop_after_attempt)]
    delays = [p.max_delay for p in parts if isinstance(p, stop_after_delay)]
    readme = (int(tries.group(1)), float(seconds.group(1)))
    code = (min(attempts), min(delays))
    assert readme == code, f"README says {readme[0]} tries / {readme[1]:g} s, " \
                           f"adapters/retrying.py allows {code[0]} tries / {code[1]:g} s"
