"""The GPU check end to end where no GPU is: the GPU tier runs on its own conftest and skips,
every result is written, at most 8 files; a step that outlives the overall deadline is killed
and the run still returns its results. The carried-wheel installer installs what is missing
or too old, beside (never over) what is installed. (``make gpu-rehearsal`` runs the whole
device command in a venv of the lent machine's packages.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from bench import wheels

ROOT = Path(__file__).resolve().parents[2]
torch = pytest.importorskip("torch")


def gpu_check(results: Path, tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--results", str(results),
         "--wheels", str(tmp_path / "no-wheels"), *options],
        cwd=ROOT, capture_output=True, text=True, timeout=540, check=False,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
@pytest.mark.timeout(600)
def test_the_gpu_tier_runs_on_a_cpu_skips_the_cuda_parts_and_writes_its_results(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"

    done = gpu_check(results, tmp_path, "--only", "tests")

    assert done.returncode == 0, done.stdout + done.stderr
    names = sorted(p.name for p in results.iterdir())
    assert names == ["env.txt", "install.log", "pytest.log", "results.json", "summary.txt"]
    summary = (results / "summary.txt").read_text()
    assert "gpu tests: exit 0" in summary and "skipped" in summary
    assert summary.strip().splitlines()[-1].startswith("gpu-check: passed (skips included)")
    assert "available: False" in (results / "env.txt").read_text()
    assert "$ pip list" in (results / "env.txt").read_text()
    assert "--confcutdir tests/gpu" in (results / "pytest.log").read_text()
    assert json.loads((results / "results.json").read_text())["status"].startswith("passed")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
@pytest.mark.timeout(600)
def test_a_step_that_outlives_the_deadline_is_killed_and_the_results_still_come_back(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"
    started = time.monotonic()

    # So many timed calls that no machine, however fast, finishes them within the deadline.
    done = gpu_check(results, tmp_path, "--only", "bench", "--deadline-s", "90",
                     "--bench-args", "--runs 100000")

    assert time.monotonic() - started < 90 + 60  # the deadline, and time to start and write
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads((results / "results.json").read_text())
    bench = next(step for step in report["steps"] if step["step"] == "benchmark")
    assert bench["exit"] in (3, 124)  # it stopped itself, or was killed, at the deadline
    assert "out of time" in (results / "bench.log").read_text()
    assert len(list(results.iterdir())) <= 8


def fake_wheel(folder: Path, name: str, version: str = "1.0", requires: str = "") -> Path:
    """A minimal pure-Python wheel holding module ``name`` (``VALUE = 42``)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {line}\n" for line in filter(None, [requires]))
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "VALUE = 42\n")
        archive.writestr(f"{info}/METADATA", metadata)
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                          "Root-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def test_only_missing_or_too_old_distributions_are_chosen(tmp_path: Path) -> None:
    pytest.importorskip("packaging.requirements")

    folder = tmp_path / "wheels"
    carried = [wheels.read_wheel(p) for p in (
        fake_wheel(folder, "newthing", requires="typing-extensions>=4.16"),
        fake_wheel(folder, "typing_extensions", "4.16.0"),
        fake_wheel(folder, "pytest", "99.0"),
        fake_wheel(folder, "other", requires="absent-anywhere>=1"),
    )]
    have = {"typing-extensions": "4.15.0", "pytest": "9.0.0"}

    chosen, unmet = wheels.choose(carried, have, sys.modules["packaging"])

    assert sorted(w.name for w in chosen) == ["newthing", "other", "typing-extensions"]
    assert unmet == ["other 1.0 needs absent-anywhere>=1: not installed"]


def test_the_installer_installs_beside_and_import_checks_what_it_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_wheel(tmp_path / "wheels", "podworker_missing_module")
    fake_wheel(tmp_path / "wheels", "pytest", "1.0")  # installed already: left alone
    monkeypatch.setattr(wheels, "IMPORT_CHECK", ("podworker_missing_module",))

    report = wheels.install_carried(tmp_path / "wheels", ROOT)

    assert report.ok, report.lines
    assert report.site is not None
    assert (report.site / "podworker_missing_module" / "__init__.py").is_file()
    assert not (report.site / "pytest").exists()
    assert "import ok: podworker_missing_module" in "\n".join(report.lines)


def test_two_versions_of_one_wheel_stop_the_install(tmp_path: Path) -> None:
    fake_wheel(tmp_path / "wheels", "twice", "1.0")
    fake_wheel(tmp_path / "wheels", "twice", "2.0")

    report = wheels.install_carried(tmp_path / "wheels", ROOT)

    assert not report.ok and "two wheels of twice" in report.lines[0]
