"""The pod image built as the image tests build it: the base, the build context, the build.

Nothing here can reach a registry or the model hub, so everything comes from the machine:

- **the base** (``BASE_IMAGE``): a Debian bookworm root made with ``debootstrap --variant=minbase``
  from the machine's Debian mirror (``DEBIAN_MIRROR`` names another), with Python 3.11, venv and
  the Python headers (what the official ``python:3.11-slim`` image has), imported with
  ``docker import``. Made once; its tag carries a hash of the recipe, so a changed recipe makes
  a new one.
- **the build context**: a temporary copy of the working tree's files (tracked and untracked,
  not ignored), so the test builds what is in the checkout, plus ``build-inputs/`` with the tiny
  Stable Diffusion pipeline (``python -m app make-tiny-model``) and torch's CPU wheel with its
  dependencies (``pip download``, which finds the wheel through this machine's pip settings).
  Both are the same files every time, so Docker's cache holds between runs.
- **the build**: BuildKit, host networking, the machine's CA bundle as the ``ca_certs`` secret
  (pip may sit behind a TLS-inspecting proxy).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.image.docker_kit import REPO, EngineMissing, docker, docker_client, tail

IMAGE = "podworker:image-test"
TOKEN_IMAGE = "podworker:image-test-token"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TORCH_VERSION = "2.13.0"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What python:3.11-slim-bookworm brings that the Dockerfile relies on: python as `python`,
# venv (with pip), CA certificates, the Python headers (Triton and Inductor compile against them).
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "python3-dev", "ca-certificates")
BASE_RECIPE = f"debootstrap --variant=minbase bookworm {' '.join(BASE_PACKAGES)}"
BASE_IMAGE = "podworker-test-base:bookworm-" + hashlib.sha256(BASE_RECIPE.encode()).hexdigest()[:8]


# --- the base image --------------------------------------------------------------------------


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def ensure_base_image() -> float:
    """Make BASE_IMAGE unless it exists; seconds spent (0 when it existed)."""
    if image_exists(BASE_IMAGE):
        return 0.0
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if debootstrap is None:
        raise EngineMissing("debootstrap is not installed (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise EngineMissing("making the base image with debootstrap needs root")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="podworker-base-") as work:
        root = Path(work) / "root"
        completed = subprocess.run(
            [debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             "bookworm", str(root), DEBIAN_MIRROR],
            capture_output=True, text=True, timeout=900, check=False,
        )
        if completed.returncode != 0:
            output = completed.stdout + completed.stderr
            raise AssertionError(f"debootstrap failed:\n{tail(output)}")
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [docker_client(), "import", "--change", "CMD [\"python3\"]", "-", BASE_IMAGE],
            stdin=tar.stdout, capture_output=True, text=True, timeout=600, check=False,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait(timeout=60)
        if imported.returncode != 0:
            raise AssertionError(f"docker import failed:\n{tail(imported.stderr)}")
    return time.monotonic() - started


# --- the build context -------------------------------------------------------------------------


def working_tree_files() -> list[Path]:
    """The checkout's files that git tracks or would track (not ignored), as relative paths."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, timeout=60, check=True,
    ).stdout.decode()
    return sorted({Path(name) for name in listed.split("\0") if name and (REPO / name).is_file()})


def make_context(dest: Path) -> Path:
    """A build context in ``dest``: the working tree's files and build-inputs/. ``dest``."""
    for relative in working_tree_files():
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, target)
    inputs = dest / "build-inputs"
    inputs.mkdir()
    run_python(["-m", "app", "make-tiny-model", str(inputs / "tiny-sd")], timeout=600)
    run_python(
        ["-m", "pip", "download", "--quiet", "--only-binary=:all:", "--python-version", "3.11",
         "--platform", "manylinux_2_28_x86_64", "--dest", str(inputs / "torch-wheels"),
         f"torch=={TORCH_VERSION}"],
        timeout=600,
    )
    return dest


def run_python(args: Sequence[str], timeout: float) -> str:
    completed = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True,
                               text=True, timeout=timeout, check=False)
    if completed.returncode != 0:
        raise AssertionError(f"python {' '.join(args[:3])} failed:\n"
                             f"{tail(completed.stdout + completed.stderr)}")
    return completed.stdout


# --- the build ---------------------------------------------------------------------------------


@dataclass
class Build:
    tag: str
    seconds: float
    log: str
    steps_run: list[str] = field(default_factory=list)  # steps not answered from the cache

    def ran(self, text: str) -> bool:
        return any(text in step for step in self.steps_run)


def build_image(context: Path, tag: str, *, revision: str = "tiny",
                secrets: Sequence[str] = (), timeout: float = 1800,
                target: str | None = None) -> Build:
    """Build the Dockerfile in ``context`` as the test image: CPU torch, the tiny pipeline
    (``target``: that stage, such as ``worker``, instead of the final one)."""
    args = [
        "build", "--progress=plain", "--network", "host", "--tag", tag,
        *(["--target", target] if target else []),
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg", "TORCH_WHEEL_DIR=build-inputs/torch-wheels",
        "--build-arg", "MODEL_ID=build-inputs/tiny-sd",
        "--build-arg", f"MODEL_REVISION={revision}",
        "--build-arg", "MODEL_VARIANT=",
        "--build-arg", "MODEL_DTYPE=float32",
    ]
    if CA_BUNDLE.is_file():
        args += ["--secret", f"id=ca_certs,src={CA_BUNDLE}"]
    for secret in secrets:
        args += ["--secret", secret]
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    started = time.monotonic()
    completed = subprocess.run(
        [docker_client(), *args, str(context)], capture_output=True, text=True,
        timeout=timeout, check=False, env=env,
    )
    seconds = time.monotonic() - started
    log = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise AssertionError(f"docker build failed after {seconds:.0f} s:\n{tail(log, 6000)}")
    return Build(tag, seconds, log, _steps_run(log))


def _steps_run(log: str) -> list[str]:
    """The build steps (``#N [stage k/n] INSTRUCTION``) that ran instead of being cached."""
    titles: dict[str, str] = {}
    cached: set[str] = set()
    for line in log.splitlines():
        number, _, rest = line.partition(" ")
        if not number.startswith("#"):
            continue
        work = rest.startswith("[") and not rest.startswith("[internal]") and "] FROM " not in rest
        if work and number not in titles:
            titles[number] = rest
        elif rest.strip() == "CACHED":
            cached.add(number)
    return [title for number, title in titles.items() if number not in cached]


def image_size(tag: str) -> int:
    return int(docker("image", "inspect", tag, "--format", "{{.Size}}").stdout.strip())


def image_contains(tag: str, needles: Sequence[bytes]) -> dict[bytes, list[str]]:
    """Where each needle occurs in the saved image: its config, history and every layer's files."""
    found: dict[bytes, list[str]] = {needle: [] for needle in needles}

    def scan(place: str, stream: Any) -> None:
        for needle in _stream_finds(stream, needles):
            found[needle].append(place)

    save = subprocess.Popen([docker_client(), "save", tag], stdout=subprocess.PIPE)
    assert save.stdout is not None
    with tarfile.open(fileobj=save.stdout, mode="r|") as outer:
        for member in outer:
            data = outer.extractfile(member) if member.isfile() else None
            if data is None:
                continue
            if not member.name.endswith("layer.tar"):
                scan(member.name, data)
                continue
            with tarfile.open(fileobj=data, mode="r|") as layer:
                for entry in layer:
                    for needle in needles:
                        if needle in entry.name.encode():
                            found[needle].append(f"{member.name}:{entry.name} (its name)")
                    if entry.isfile():
                        scan(f"{member.name}:{entry.name}", layer.extractfile(entry))
    if save.wait(timeout=300) != 0:
        raise AssertionError(f"docker save {tag} failed")
    return found


def _stream_finds(stream: Any, needles: Sequence[bytes]) -> set[bytes]:
    """The needles that occur in ``stream``, read a MiB at a time (a needle may span two)."""
    hits: set[bytes] = set()
    if stream is None:
        return hits
    overlap = max(len(n) for n in needles)
    tail = b""
    while chunk := stream.read(1 << 20):
        window = tail + chunk
        hits.update(n for n in needles if n in window)
        tail = window[-overlap:]
    return hits


