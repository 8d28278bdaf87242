"""Carried wheels (``.whl/``) installed beside what a lent GPU machine already has.

A lent machine cannot reach a registry: what its image lacks travels as wheels (``make
gpu-wheels``), and they must fit what the image has. What :func:`install_carried` promises:

- **Only what is needed.** A carried wheel is installed when its distribution is missing, or
  when a wheel being installed requires a version the machine's copy does not satisfy (pydantic
  2.14 needs typing-extensions >= 4.16, say): then the carried one, put first on the path, wins.
  Nothing of the machine's is changed; everything goes into one ``--target`` folder.
- **Checked, not hoped for.** Every requirement of every installed wheel is checked against
  what will be importable (the carried wheels first, then the machine's), and the modules the
  checks need are imported in a fresh interpreter with the final path. An unmet requirement is
  named in the log; a failed import fails the step, before any test runs.
- **One version each.** Two wheels of one distribution stop the install with a message.

``packaging`` (on the lent machine's list) parses requirements; without it every carried wheel
of a missing distribution is installed and the requirement check is skipped, saying so.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path
from typing import Any

IMPORT_CHECK = ("torch", "diffusers", "transformers", "safetensors", "PIL", "numpy", "pydantic",
                "pydantic_settings", "tenacity", "pytest", "adapters.stable_diffusion.model",
                "app.settings")
"""What the GPU checks import: each is imported once, with the final path, after the install."""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Wheel:
    path: Path
    name: str  # normalised distribution name
    version: str
    requires: list[str] = field(default_factory=list)  # Requires-Dist lines


@dataclass
class InstallReport:
    site: Path | None  # the folder to put first on the path; None when nothing was installed
    lines: list[str]
    ok: bool


def read_wheel(path: Path) -> Wheel:
    """Name, version and requirements from the wheel's METADATA."""
    with zipfile.ZipFile(path) as archive:
        member = next(n for n in archive.namelist()
                      if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        metadata = Parser().parsestr(archive.read(member).decode("utf-8", "replace"))
    return Wheel(path, normalise(metadata["Name"]), metadata["Version"],
                 metadata.get_all("Requires-Dist") or [])


def installed_versions() -> dict[str, str]:
    """``{normalised name: version}`` of what this interpreter can import now."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and normalise(name) not in found:
            found[normalise(name)] = dist.version
    return found


def choose(wheels: list[Wheel], have: dict[str, str], packaging: Any) -> tuple[
        list[Wheel], list[str]]:
    """The wheels to install and the requirements nothing satisfies (see the module docstring)."""
    carried = {w.name: w for w in wheels}
    chosen = {w.name: w for w in wheels if w.name not in have}
    if packaging is None:
        return list(chosen.values()), ["packaging is missing: requirements not checked"]
    unmet: list[str] = []
    changed = True
    while changed:
        changed = False
        for wheel in list(chosen.values()):
            for line in wheel.requires:
                need = packaging.requirements.Requirement(line)
                if need.marker is not None and not need.marker.evaluate({"extra": ""}):
                    continue
                name = normalise(need.name)
                if name in chosen:
                    continue
                version = have.get(name)
                if version is not None and need.specifier.contains(version, prereleases=True):
                    continue
                offer = carried.get(name)
                if offer is not None and need.specifier.contains(offer.version, prereleases=True):
                    chosen[name] = offer
                    changed = True
                else:
                    got = f"{version} installed" if version else "not installed"
                    carried_note = f", {offer.version} carried" if offer else ""
                    unmet.append(f"{wheel.name} {wheel.version} needs {line.split(';')[0]}: "
                                 f"{got}{carried_note}")
    return list(chosen.values()), sorted(set(unmet))


def install_carried(wheels_dir: Path, root: Path) -> InstallReport:
    """Install what is needed from ``wheels_dir``, check it, and say what happened."""
    lines: list[str] = []
    paths = sorted(wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []
    wheels = [read_wheel(p) for p in paths]
    names = [w.name for w in wheels]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        return InstallReport(None, [f"two wheels of {', '.join(twice)} in {wheels_dir}: keep "
                                    "one version of each"], ok=False)
    try:
        import packaging.requirements
        import packaging.specifiers

        packaging_module: Any = packaging
    except ImportError:
        packaging_module = None
    have = installed_versions()
    lines.append(f"{len(wheels)} carried wheels in {wheels_dir}; "
                 f"{len(have)} distributions on this machine")
    chosen, unmet = choose(wheels, have, packaging_module)
    for wheel in sorted(chosen, key=lambda w: w.name):
        why = "missing here" if wheel.name not in have else f"replaces {have[wheel.name]}"
        lines.append(f"install {wheel.name} {wheel.version} ({why})")
    # A requirement nothing satisfies is a warning: the import check below decides.
    lines += [f"unmet requirement: {line}" for line in unmet]
    site: Path | None = None
    if chosen:
        site = Path(tempfile.mkdtemp(prefix="gpu-check-site-"))
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                   "--no-compile", "--no-cache-dir", "--target", str(site),
                   *(str(w.path) for w in chosen)]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
        lines += [line for line in (done.stdout.strip(), done.stderr.strip()) if line]
        if done.returncode != 0:
            lines.append(f"pip install failed (exit {done.returncode})")
            return InstallReport(None, lines, ok=False)
        lines.append(f"installed {len(chosen)} wheels into {site}")
    else:
        lines.append("nothing to install")
    imported, import_lines = import_check(site, root)
    lines += import_lines
    return InstallReport(site, lines, ok=imported)


def child_path(site: Path | None, root: Path) -> str:
    """PYTHONPATH for the steps: the carried wheels first, then the repository."""
    parts = [str(site)] if site is not None else []
    parts += [str(root), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


def import_check(site: Path | None, root: Path) -> tuple[bool, list[str]]:
    """Import :data:`IMPORT_CHECK` in a fresh interpreter with the steps' path; (ok, lines)."""
    script = (
        "import importlib, sys\n"
        "bad = []\n"
        f"for name in {IMPORT_CHECK!r}:\n"
        "    try:\n"
        "        module = importlib.import_module(name)\n"
        "        print('import ok:', name, getattr(module, '__version__', ''))\n"
        "    except Exception as exc:\n"
        "        bad.append(name)\n"
        "        print('IMPORT FAILED:', name, type(exc).__name__, str(exc)[:300])\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = dict(os.environ, PYTHONPATH=child_path(site, root))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=root, env=env, check=False, timeout=300)
    lines = done.stdout.strip().splitlines() + done.stderr.strip().splitlines()[-20:]
    return done.returncode == 0, lines
