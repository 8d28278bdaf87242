"""``python -m app bake-weights`` run as the image build runs it (tests/integration/test_bake*).

In a subprocess with downloads off (``HF_HUB_OFFLINE=1``, no token, a private ``HF_HOME``); its
own stderr lines start with :data:`PREFIX`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PREFIX = "podworker bake-weights:"


def offline_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"HF_TOKEN", "PYTHONPATH"}}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf-home"))
    return env


def bake_cli(*args: str, tmp: Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "bake-weights", *args],
        cwd=cwd, env=offline_env(tmp), capture_output=True, text=True, timeout=110, check=False,
    )


def our_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(PREFIX)]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }
