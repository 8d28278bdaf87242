"""RunPod's SDK (PyPI ``runpod``) in a virtual environment of its own: ``bench/.venv-runpod``.

Shared by the benchmark (``bench/compare.py``, the latest release) and the contract tests that
run RunPod's own worker and client against the fake platform
(``tests/contract/test_official_runpod.py``, a pinned release). Kept apart from podworker's
``.venv`` so the SDK's many dependencies never meet podworker's.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RUNPOD_VENV = Path(__file__).resolve().parent / ".venv-runpod"


class RunpodVenvError(RuntimeError):
    """The SDK could not be installed (no registry, say); the message says what pip said."""


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


def ensure_runpod_venv(requirement: str = "runpod", *, upgrade: bool = True,
                       say: Callable[[str], None] = print) -> RunpodVenv:
    """``bench/.venv-runpod`` holding ``requirement`` (``runpod``: the latest release,
    ``runpod==1.12.0``: that one). Without ``upgrade``, an install that already satisfies a
    pinned requirement is used as it is, with no registry call. Raises ``RunpodVenvError``."""
    python = RUNPOD_VENV / "bin" / "python"
    pinned = requirement.partition("==")[2]
    found = installed(python)
    if found is not None and not upgrade and pinned and found[0] == pinned:
        return RunpodVenv(python, *found)
    if not python.exists():
        say(f"creating {RUNPOD_VENV} ...")
        subprocess.run([sys.executable, "-m", "venv", str(RUNPOD_VENV)], check=True, timeout=300)
    say(f"installing {requirement} into {RUNPOD_VENV} ...")
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *(["--upgrade", "--upgrade-strategy", "only-if-needed"] if upgrade else []),
         requirement],
        capture_output=True, text=True, timeout=900,
    )
    found = installed(python)
    if found is None or (pinned and found[0] != pinned):
        raise RunpodVenvError(f"{requirement} is not installed in {RUNPOD_VENV}; pip said:\n"
                              + (pip.stdout[-1500:] + pip.stderr[-1500:]).strip())
    if pip.returncode != 0:
        say(f"pip could not install {requirement}; using runpod {found[0]}:\n"
            + pip.stderr[-1500:])
    return RunpodVenv(python, *found)
