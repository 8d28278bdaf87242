"""A real small filesystem that fills up: a tmpfs mounted by the test, for full-disk faults.

``/dev/full`` fails every write whole, which no real disk does: a real full filesystem takes
the part of a write that fits, then fails the next one. These tests need the real thing, so
``small_disk`` mounts a tmpfs of ``SIZE`` bytes under the test's own ``tmp_path`` (root only:
CI runs as root; elsewhere the test is skipped, saying why) and unmounts it afterwards.

``fill(folder, leave)`` writes a filler file until at most ``leave`` bytes are free (tmpfs
counts in 4 KiB pages, so what is left is a page or two at most); deleting the filler frees the
space again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SIZE = 1024 * 1024
PAGE = 4096


def free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the filesystem of ``folder`` until at most ``leave`` bytes (rounded up to a page)
    are free; returns the filler file (delete it to free the space)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while free_bytes(folder) > leave:
            os.write(fd, b"\0" * min(PAGE * 16, max(PAGE, free_bytes(folder) - leave)))
    except OSError:  # full: nothing is left at all
        pass
    finally:
        os.close(fd)
    return filler


def _can_mount() -> str | None:
    """None when this process may mount a tmpfs, else why not."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root (CI runs as root)"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "needs mount and umount"
    return None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a fresh ``SIZE``-byte tmpfs, unmounted when the test ends."""
    reason = _can_mount()
    if reason is not None:
        pytest.skip(reason)
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True, text=True, check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"could not mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)
