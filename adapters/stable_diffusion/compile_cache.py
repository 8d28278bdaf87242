"""Where compiled graphs are kept between starts: a cache folder that may be shared by pods.

Compiling the served graphs costs minutes at every cold start; a pod that finds them compiled
starts in seconds. What the cache promises (``SD_COMPILE_CACHE_DIR``, by default
``STATE_DIR/compile-cache``; a network volume shared by pods of one image works):

- **Portable artifacts, keyed.** After a successful warm-up, ``torch.compiler``'s cache
  artifacts (Inductor's compiled graphs, Triton's kernels, autotuning results) are saved as one
  file, ``artifacts-<key>.bin``, whose key names what makes them reusable: torch, Triton and
  diffusers versions, the GPU's name and compute capability, the compile mode and the model. At
  the next start they are loaded before compiling, so Inductor finds its work done.
- **Never fatal.** A file made for another key (say copied from another image), a file whose
  checksum does not match (a half-copied or corrupt file), or one torch refuses is ignored with
  one warning, and the graphs are compiled as if there were none. Saving is best effort too.
- **Written whole.** A file is written beside its place and renamed into it, so a pod reading
  the folder never sees half a file, and two pods saving at once leave one whole file.
- **Inductor's own folder per compilation.** While a compilation warms up, Inductor's and
  Triton's cache folders are set to this folder's (``inductor/``) and restored after, so two
  compilations in one process (a benchmark's variants, a test's) each use their own folder.

The warm-up marker (:class:`WarmupMarker`) lives on the pod's own disk (``STATE_DIR``): a
process that dies while compiling (a crash in a compiler, a lost GPU) leaves it behind, and the
next start, with the same key, runs uncompiled instead of dying the same way again.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adapters.stable_diffusion.faults import describe

log = logging.getLogger("podworker.model")

CACHE_ENV = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
MARKER_NAME = "compile-warmup.json"


def cache_key(torch: Any, device: str, *, mode: str, model: str) -> dict[str, str]:
    """What compiled artifacts depend on (see the module docstring)."""
    if device.startswith("cuda"):
        major, minor = torch.cuda.get_device_capability(device)
        gpu = f"{torch.cuda.get_device_name(device)} sm{major}{minor}"
    else:
        gpu = "cpu"
    return {"torch": str(torch.__version__), "triton": _version("triton"),
            "diffusers": _version("diffusers"), "device": gpu, "mode": mode, "model": model}


def digest(key: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "none"


class ArtifactCache:
    """The portable artifacts of one key in ``folder`` (see the module docstring)."""

    def __init__(self, folder: Path, key: dict[str, str]) -> None:
        self.folder = folder
        self.key = key
        self.path = folder / f"artifacts-{digest(key)}.bin"

    def load(self, torch: Any) -> bool:
        """Hand the saved artifacts to torch; False (with a warning) when there are none that
        fit. Never raises."""
        try:
            with self.path.open("rb") as file:
                header = json.loads(file.readline())
                payload = file.read()
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            return self._ignored(f"unreadable ({describe(exc)})")
        if not isinstance(header, dict) or header.get("key") != self.key:
            made_for = header.get("key") if isinstance(header, dict) else None
            return self._ignored(f"made for {made_for}, not {self.key}")
        if header.get("sha256") != hashlib.sha256(payload).hexdigest():
            return self._ignored("corrupt (its checksum does not match)")
        try:
            info = torch.compiler.load_cache_artifacts(payload)
        except Exception as exc:
            return self._ignored(f"refused by torch ({describe(exc)})")
        if info is None:
            return self._ignored("refused by torch (nothing could be read from it)")
        log.info("compile cache loaded from %s", self.path, extra={"event": "compile_cache_hit"})
        return True

    def save(self, torch: Any) -> bool:
        """Save what this process compiled; False when there was nothing or it failed."""
        try:
            saved = torch.compiler.save_cache_artifacts()
            if saved is None:
                return False
            payload = bytes(saved[0])
            header = {"key": self.key, "sha256": hashlib.sha256(payload).hexdigest(),
                      "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=".artifacts-", dir=self.folder)
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(json.dumps(header).encode() + b"\n" + payload)
                os.replace(temporary, self.path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
        except Exception as exc:
            log.warning("compile cache not saved to %s: %s", self.folder, describe(exc),
                        extra={"event": "compile_cache_not_saved"})
            return False
        log.info("compile cache saved to %s (%d bytes)", self.path, len(payload),
                 extra={"event": "compile_cache_saved"})
        return True

    def _ignored(self, why: str) -> bool:
        log.warning("compile cache %s ignored: %s; compiling from scratch", self.path, why,
                    extra={"event": "compile_cache_ignored"})
        return False


@contextlib.contextmanager
def inductor_folder(torch: Any, folder: Path | None) -> Iterator[None]:
    """Inductor's and Triton's cache folders set to ``folder`` (and its in-memory caches
    cleared) for the duration; the previous values restored after. Nothing when ``folder``
    is None."""
    if folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {"TORCHINDUCTOR_CACHE_DIR": str(folder), "TRITON_CACHE_DIR": str(folder / "triton")}
    before = {name: os.environ.get(name) for name in CACHE_ENV}
    os.environ.update(wanted)
    _clear_inductor_caches(torch)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _clear_inductor_caches(torch: Any) -> None:
    """Forget the in-memory caches that remember the last folder (best effort: a private API)."""
    try:
        from torch._inductor.utils import clear_caches

        clear_caches()
    except Exception as exc:
        log.debug("Inductor's in-memory caches not cleared: %s", describe(exc))


class WarmupMarker:
    """A file on the pod's own disk while a compiled warm-up runs (see the module docstring)."""

    def __init__(self, state_dir: Path, key: dict[str, str]) -> None:
        self.path = state_dir / MARKER_NAME
        self.key = key

    def crashed_before(self) -> str | None:
        """When an earlier start with this key died while warming up: what it left; else None."""
        try:
            left = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(left, dict) or left.get("key") != self.key:
            return None
        return f"pid {left.get('pid')} began compiling at {left.get('started')} and never finished"

    def begin(self) -> None:
        record = {"key": self.key, "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(record) + "\n", encoding="utf-8")
        except OSError as exc:
            log.warning("warm-up marker not written (%s): a crash while compiling would not "
                        "be noticed by the next start", describe(exc))

    def end(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
