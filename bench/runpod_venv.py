"""RunPod's SDK (PyPI ``runpod``, pinned in the Makefile) in a venv of its own: ``.venv-runpod``.

``make setup`` makes it once (stamped, like ``.venv``) with podworker installed beside the SDK,
as in a handler's image, so one interpreter runs both RunPod's worker (``python handler.py``)
and podworker's (``python -m app handler handler.py``). Nothing installs it during a test or a
benchmark: they find it here, or say to run ``make setup``. Shared by the benchmark
(``bench/compare.py``), the contract tests that run RunPod's worker and client against the fake
platform (``tests/contract/test_official_runpod.py``) and the differential tests of handlers
(``tests/contract/test_handlers_side_by_side.py``). Kept apart from podworker's ``.venv`` so the
SDK's many dependencies never meet torch's and diffusers'.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

RUNPOD_VENV = Path(__file__).resolve().parents[1] / ".venv-runpod"


class RunpodVenvError(RuntimeError):
    """The SDK's venv is missing or broken; the message says to run ``make setup``."""


@dataclass(frozen=True)
class RunpodVenv:
    python: Path
    runpod_version: str
    python_version: str


def installed(python: Path) -> tuple[str, str] | None:
    """(runpod version, Python version) in the venv of ``python``, None when absent."""
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m, platform; "
         "print(m.version('runpod'), platform.python_version())"],
        capture_output=True, text=True, timeout=60,
    )
    return tuple(probe.stdout.split()) if probe.returncode == 0 else None  # type: ignore[return-value]


def runpod_venv() -> RunpodVenv:
    """``.venv-runpod`` as ``make setup`` left it; ``RunpodVenvError`` when it is not there."""
    python = RUNPOD_VENV / "bin" / "python"
    found = installed(python)
    if found is None:
        raise RunpodVenvError(f"RunPod's SDK is not installed in {RUNPOD_VENV}: run `make setup`")
    return RunpodVenv(python, *found)
