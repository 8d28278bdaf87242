"""One line instead of a traceback when podworker runs in a Python that lacks its dependencies.

The usual cause: ``python -m app ...`` typed with the system's Python rather than the virtual
environment ``make setup`` makes (``.venv``). Standard library only, so it can speak even when
nothing else can be imported.
"""

from __future__ import annotations

import sys

SETUP = "run `make setup`, then use `.venv/bin/podworker` (or the make targets)"


def missing_dependency(exc: ModuleNotFoundError) -> str:
    """What to do about ``exc``, in one line naming the module and the Python that lacks it."""
    name = exc.name or str(exc)
    return (f"podworker: the module {name!r} is not installed in this Python "
            f"({sys.executable}): {SETUP}")
