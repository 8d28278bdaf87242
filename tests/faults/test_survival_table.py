"""The README's "What podworker survives" table names tests that exist and are expected to pass."""

from __future__ import annotations

import re

from tests.support.worker_process import ROOT

START, END = "<!-- survives-table:start -->", "<!-- survives-table:end -->"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def table() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index(START) + len(START) : readme.index(END)]


def test_every_row_of_the_survival_table_names_an_existing_test_not_marked_xfail() -> None:
    rows = [line for line in table().splitlines() if line.startswith("| ") and "`tests/" in line]
    assert len(rows) >= 20
    for row in rows:
        references = REFERENCE.findall(row)
        assert references, row
        for path, name in references:
            source = (ROOT / path).read_text()
            if not name:
                assert "def test_" in source
                continue
            found = re.search(rf"^def {name}\(", source, re.MULTILINE)
            assert found, f"{path}::{name} does not exist"
            decorators = source[: found.start()].rsplit("\n\n", 1)[-1]
            assert "xfail" not in decorators, f"{path}::{name} is expected to fail"
