"""The domain imports only the standard library (and itself)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

DOMAIN = Path(__file__).resolve().parents[2] / "domain"


def imported_modules(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_domain_imports_nothing_outside_the_standard_library() -> None:
    allowed = set(sys.stdlib_module_names) | {"domain", "__future__"}
    offenders = {
        f"{path.name}: {name}"
        for path in DOMAIN.rglob("*.py")
        for name in imported_modules(path)
        if name.split(".")[0] not in allowed
    }
    assert offenders == set()
    assert len(list(DOMAIN.rglob("*.py"))) >= 6  # the walk really saw the domain


def test_domain_never_reads_the_clock() -> None:
    for path in DOMAIN.rglob("*.py"):
        text = path.read_text()
        for call in ("time.time(", "time.monotonic(", "datetime.now(", "perf_counter("):
            assert call not in text, f"{path.name} reads the clock ({call})"
