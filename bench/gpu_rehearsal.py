"""``make gpu-rehearsal``: the README's device command, run on a CPU in a venv cut down to what
a lent GPU machine has, so that the one GPU run a task gets succeeds at first contact.

What it does, and checks:

1. A venv (``.gpu-rehearsal/venv``, rebuilt when ``bench/gpu_machine.txt`` or the torch spec
   changes) holding only the lent machine's packages (``bench/gpu_machine.txt``) and torch;
   it must not be able to import what that machine lacks (diffusers, boto3, botocore, moto,
   freezegun, pydantic-settings), or the rehearsal would prove nothing.
2. A copy of the working tree as the device tool sends it (tracked and untracked files that
   git does not ignore), with ``.whl/`` filled by ``make gpu-wheels`` for the venv's Python.
3. The command from the README's device block (between ``device-command`` markers), run with
   ``bash -c`` in that copy, ``python3`` being the venv's, ``$OUT`` an empty folder, nothing
   else of this machine's environment, killed at the block's ``timeout_s``.
4. It passed (exit 0, a passing ``summary.txt``), inside ``timeout_s``, and what is under
   ``$OUT`` would come back: at most 8 files, 16 MiB each, no deeper than two folders, names
   of letters, digits, ``.``, ``_`` and ``-``.

It prints the wall time, the files and their count, and exits 1 when anything above failed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABSENT = ("diffusers", "boto3", "botocore", "moto", "freezegun", "pydantic_settings")
NAME = re.compile(r"[A-Za-z0-9._-]+")
MAX_FILES, MAX_BYTES = 8, 16 * 2**20


def device_block(readme: Path) -> tuple[str, int]:
    """The device command and its ``timeout_s`` from the README's device block."""
    text = readme.read_text(encoding="utf-8")
    block = text.split("<!-- device-command:start -->")[1].split("<!-- device-command:end -->")[0]
    command = next(line.strip() for line in block.splitlines()
                   if line.strip().startswith("python3 "))
    timeout = re.search(r"timeout_s:\s*(\d+)", block)
    if timeout is None:
        raise SystemExit("the README's device block names no timeout_s")
    return command, int(timeout.group(1))


def venv(folder: Path, python: str, torch_spec: str) -> Path:
    requirements = ROOT / "bench" / "gpu_machine.txt"
    stamp = hashlib.sha256(requirements.read_bytes() + torch_spec.encode()).hexdigest()
    marker = folder / ".rehearsal-stamp"
    bin_python = folder / "bin" / "python3"
    if not (marker.is_file() and marker.read_text() == stamp and bin_python.exists()):
        shutil.rmtree(folder, ignore_errors=True)
        run([python, "-m", "venv", str(folder)])
        pip = [str(bin_python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        run([*pip, torch_spec])
        run([*pip, "-r", str(requirements)])
        marker.write_text(stamp)
    present = subprocess.run(
        [str(bin_python), "-c", "import importlib.util as u; print(' '.join(n for n in "
         f"{ABSENT!r} if u.find_spec(n)))"], capture_output=True, text=True, check=True,
    ).stdout.split()
    if present:
        raise SystemExit(f"the rehearsal venv has {present}, which the lent machine lacks")
    return bin_python


def copy_tree(target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = ROOT / raw.decode()
        if source.is_file():
            (target / raw.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / raw.decode())


def run(command: list[str], **kwargs: object) -> None:
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]


def check_out(out: Path) -> list[str]:
    """What would not come back from ``out`` (the device tool's limits)."""
    problems = []
    files = [p for p in out.rglob("*") if p.is_file()]
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files, at most {MAX_FILES} come back")
    for path in files:
        parts = path.relative_to(out).parts
        if len(parts) > 3:
            problems.append(f"{path}: more than two folders down")
        if not all(NAME.fullmatch(part) for part in parts):
            problems.append(f"{path}: a name with other characters")
        if path.stat().st_size > MAX_BYTES:
            problems.append(f"{path}: larger than 16 MiB")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--python", default="python3", help="the venv's Python")
    parser.add_argument("--torch", default="torch==2.13.0", help="the torch to install")
    parser.add_argument("--work", type=Path, default=ROOT / ".gpu-rehearsal")
    args = parser.parse_args(argv)
    command, timeout_s = device_block(ROOT / "README.md")
    python = venv(args.work / "venv", args.python, args.torch)
    tree, out = args.work / "tree", args.work / "out"
    copy_tree(tree)
    version = subprocess.run([str(python), "-c", "import sys; print('%d.%d' % sys.version_info"
                              "[:2])"], capture_output=True, text=True, check=True).stdout.strip()
    run(["make", "--no-print-directory", "gpu-wheels", f"GPU_WHEELS_DIR={tree / '.whl'}",
         f"GPU_WHEELS_PYTHON={version}"], cwd=ROOT)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {"PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin", "OUT": str(out),
           "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    print(f"$ (in {tree}, timeout_s {timeout_s}) {command}", flush=True)
    started = time.monotonic()
    try:
        code = subprocess.run(["bash", "-c", command], cwd=tree, env=env, timeout=timeout_s,
                              check=False).returncode
    except subprocess.TimeoutExpired:
        code = 124
    wall = time.monotonic() - started
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    problems = check_out(out)
    if code != 0:
        problems.append(f"the device command exited {code}")
    summary = out / "summary.txt"
    if not summary.is_file() or "gpu-check: passed" not in summary.read_text():
        problems.append("summary.txt does not say the check passed")
    print(f"gpu-rehearsal: wall {wall:.0f} s of timeout_s {timeout_s}; {len(files)} files "
          f"under $OUT: {', '.join(files)}")
    for problem in problems:
        print(f"gpu-rehearsal: FAILED: {problem}")
    print("gpu-rehearsal: passed" if not problems else "gpu-rehearsal: FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
