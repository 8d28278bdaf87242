"""``make gpu-check`` end to end where no GPU is: every step runs, the CUDA parts say they were
skipped, every result is in its file, and the exit code is 0. The wheel installer installs only
what is missing, from the wheels folder, beside (never over) what is installed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench import gpu_check

ROOT = Path(__file__).resolve().parents[2]
torch = pytest.importorskip("torch")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
@pytest.mark.timeout(600)
def test_gpu_check_on_a_cpu_runs_every_step_skips_the_cuda_parts_and_writes_every_result(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"

    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--results", str(results),
         "--wheels", str(tmp_path / "no-wheels")],
        cwd=ROOT, capture_output=True, text=True, timeout=540, check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    names = sorted(p.name for p in results.iterdir())
    assert names == ["batching.log", "bench.json", "bench.log", "bench.txt", "env.txt",
                     "install.log", "pytest.log", "pytest.xml", "summary.txt"]
    summary = (results / "summary.txt").read_text()
    assert "available: False" in summary
    assert "gpu tests: exit 0" in summary and "skipped" in summary
    assert "benchmark: exit 0" in summary and "SKIPPED: no CUDA device" in summary
    assert "batching benchmark: exit 0 in" in summary
    assert "SKIPPED: no CUDA device" in (results / "batching.log").read_text()
    assert summary.strip().endswith("gpu-check: passed (skips included)")
    assert 'skipped="' in (results / "pytest.xml").read_text()


def fake_wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel holding module ``name`` (``VALUE = 42``)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "VALUE = 42\n")
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                          "Root-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def test_the_installer_installs_only_missing_modules_from_the_wheels_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_wheel(tmp_path / "wheels", "podworker_missing_module")
    fake_wheel(tmp_path / "wheels", "pytest")  # installed already: must not be installed again
    monkeypatch.setattr(gpu_check, "NEEDED", {"podworker_missing_module": "podworker_missing",
                                               "pytest": "pytest-"})
    monkeypatch.setattr(sys, "path", list(sys.path))

    site, log = gpu_check.install_missing(tmp_path / "wheels")

    assert site is not None
    assert log[0] == "missing: podworker_missing_module"
    assert (site / "podworker_missing_module" / "__init__.py").read_text() == "VALUE = 42\n"
    assert not (site / "pytest").exists()
    assert "installed 1 wheels" in log[-1]


def test_without_wheels_the_installer_says_what_is_missing_and_installs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu_check, "NEEDED", {"podworker_missing_module": "podworker_missing"})

    site, log = gpu_check.install_missing(tmp_path / "empty")

    assert site is None
    assert log == ["missing: podworker_missing_module",
                   f"no wheels for them in {tmp_path / 'empty'} (make gpu-wheels): not installed"]
