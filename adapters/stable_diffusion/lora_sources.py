"""Finding the LoRA files jobs ask for, and checking them before the device thread sees them.

A :class:`LoraLibrary` turns a job's :class:`~.lora_fields.LoraRequest` s into
:class:`ResolvedLora` s, on the job's own thread (the device thread only loads what passed):

- **names and paths stay in ``LORA_DIR``.** A name is a file in the folder itself
  (``.safetensors`` added when left out); a path is relative to the folder. Both are resolved
  with every symlink followed, and refused unless the real file is inside the folder's real
  path: ``..``, an absolute path or a symlink pointing out never reach a file elsewhere.
- **URLs only with a fetcher** (``LORA_URL_FETCH``): the SSRF-safe fetcher of input images
  (:class:`adapters.http.safe_fetch.SafeFetcher`: no private or metadata addresses, one
  overall deadline, ``LORA_MAX_BYTES``). The body is written to a file beside the cache as it
  arrives (hashed on the way: memory holds a chunk, not the file), checked like a file, then
  renamed to ``<sha256>.safetensors``, so a reader never sees half a file; the same URL is not
  fetched again while that file is there.
- **safetensors only, never a pickle.** Every file must parse as safetensors (the header is read,
  no tensor is), hold LoRA tensors (a ``lora`` key), be at most ``LORA_MAX_BYTES`` and have a
  rank (the inner size of its down/A matrices) at most ``LORA_MAX_RANK``. The device thread
  hands diffusers the checked file with ``use_safetensors=True``, so nothing is ever unpickled.
- **One identity per content.** A LoRA is known by the SHA-256 of its bytes (memoised per file
  size, mtime and inode; a fetched file's is the hash of what was fetched, so a fetch reads its
  bytes once): the same file under two names, or a URL and a file with the same bytes, are one
  adapter in the device's cache.

Every problem is an ``InvalidInput`` naming the LoRA (``invalid input: loras[1] 'pixel-art': no
such LoRA in LORA_DIR``), all of a job's in one line. Never a URL's query, which may hold a
token. safetensors is imported when a file is checked, not at import.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from adapters.http.client import OnCancel
from adapters.http.safe_fetch import FetchRefused, SafeFetcher
from adapters.stable_diffusion.lora_fields import LoraPolicy, LoraRequest
from domain.errors import InvalidInput

SUFFIX = ".safetensors"
PICKLES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
ACCEPT = "application/octet-stream, */*;q=0.5"
"""What a LoRA fetch asks for (servers send safetensors as a generic binary)."""
_DOWN = re.compile(r"(lora_A|lora_down|lora\.down)(\.[\w-]+)?\.weight$")
"""A LoRA's down (A) matrix: its first dimension is the rank."""


@dataclass(frozen=True)
class LoraLimits:
    """Bounds on LoRAs: ``max_bytes`` a file, ``max_rank`` its rank, ``max_per_job`` in one
    job, ``cache_max`` loaded at once on the device (at least ``max_per_job``)."""

    max_bytes: int = 1_000_000_000
    max_rank: int = 128
    max_per_job: int = 4
    cache_max: int = 8

    def __post_init__(self) -> None:
        if self.cache_max < self.max_per_job:
            raise ValueError(f"LORA_CACHE_MAX ({self.cache_max}) must be at least "
                             f"LORA_MAX_PER_JOB ({self.max_per_job}): one job's LoRAs are "
                             "loaded together")


@dataclass(frozen=True)
class ResolvedLora:
    """A checked LoRA file and the scale a job wants it at. ``key`` is the SHA-256 of its bytes;
    ``label`` names it in messages."""

    key: str
    file: Path
    scale: float
    label: str
    rank: int

    @property
    def adapter_name(self) -> str:
        """The adapter's name in the pipeline (one per content)."""
        return f"lora_{self.key[:20]}"


class LoraLibrary:
    """Resolves the LoRAs jobs ask for to checked files (see the module docstring).

    ``folder`` is ``LORA_DIR`` (None: no names or paths); ``cache_dir`` keeps fetched LoRAs;
    ``fetcher`` is None unless ``LORA_URL_FETCH`` is on.
    """

    def __init__(self, folder: Path | None, cache_dir: Path, limits: LoraLimits | None = None,
                 fetcher: SafeFetcher | None = None) -> None:
        self.folder = folder
        self.cache_dir = cache_dir
        self.limits = limits or LoraLimits()
        self.fetcher = fetcher
        self.fetches = 0  # URLs fetched (a URL already on disk is not fetched again)
        self.hashed = 0  # contents hashed (each file or fetch once, while it is unchanged)
        self._lock = threading.Lock()
        self._digests: dict[tuple[str, int, int, int], str] = {}
        self._fetched: dict[str, Path] = {}  # URL -> its file in cache_dir

    @property
    def policy(self) -> LoraPolicy:
        """What the job schema lets through for this library."""
        return LoraPolicy(folder=self.folder is not None, urls=self.fetcher is not None,
                          max_per_job=self.limits.max_per_job)

    def resolve(self, wanted: Sequence[LoraRequest],
                on_cancel: OnCancel | None = None) -> tuple[ResolvedLora, ...]:
        """The checked file of each request, in order. Raises ``InvalidInput`` naming every
        LoRA that cannot be used, in one line. ``on_cancel`` (the job's): a job-stop cuts a
        download at once (the caller checks its context after a refusal)."""
        resolved: list[ResolvedLora] = []
        problems: list[str] = []
        for request in wanted:
            try:
                file = (self._fetch(request, on_cancel) if request.source == "url"
                        else self._find(request))
                key, rank = self._check(file)
            except _Refused as exc:
                problems.append(f"{request.label}: {exc}")
                continue
            twin = next((r for r in resolved if r.key == key), None)
            if twin is not None:
                problems.append(f"{request.label}: the same file as {twin.label}")
                continue
            resolved.append(ResolvedLora(key, file, request.scale, request.label, rank))
        if problems:
            raise InvalidInput("invalid input: " + "; ".join(problems))
        return tuple(resolved)

    # --- sources ------------------------------------------------------------------------------

    def _find(self, request: LoraRequest) -> Path:
        if self.folder is None:
            raise _Refused("this worker has no LORA_DIR")
        value = request.value
        if request.source == "name" and not value.lower().endswith((*PICKLES, SUFFIX)):
            value += SUFFIX
        if not value.endswith(SUFFIX):
            raise _Refused(f"only {SUFFIX} files are read (never pickles: .ckpt, .pt, .bin)")
        try:
            root = self.folder.resolve(strict=True)
        except OSError:
            raise _Refused("LORA_DIR is not there on this worker") from None
        candidate = root / value
        try:
            real = candidate.resolve(strict=True)
        except OSError:
            where = "LORA_DIR" if request.source == "name" else "LORA_DIR at that path"
            raise _Refused(f"no such LoRA in {where}") from None
        if not real.is_relative_to(root):
            raise _Refused("leads outside LORA_DIR (a symlink out?): refused")
        if not real.is_file():
            raise _Refused("not a file")
        return real

    def _fetch(self, request: LoraRequest, on_cancel: OnCancel | None) -> Path:
        if self.fetcher is None:
            raise _Refused("URLs are not fetched by this worker (LORA_URL_FETCH is off)")
        with self._lock:
            known = self._fetched.get(request.value)
        if known is not None and known.is_file():
            return known
        download = _Download(self.cache_dir)
        try:
            try:
                self.fetcher.fetch(request.value, accept=ACCEPT, sink=download,
                                   on_cancel=on_cancel)
            except FetchRefused as exc:
                raise _Refused(f"could not be fetched: {exc}") from None
            staging = download.finish()
            self.fetches += 1
            digest = download.sha.hexdigest()
            target = self.cache_dir / f"{digest}{SUFFIX}"
            if not target.is_file():
                self._allowed_rank(staging)  # a bad download is never cached
                os.replace(staging, target)
        finally:
            download.discard()
        with self._lock:
            self.hashed += 1
            self._fetched[request.value] = target
            with contextlib.suppress(OSError):  # gone meanwhile: hashed again when checked
                self._digests[self._memo(target, target.stat())] = digest
        return target

    # --- checks -------------------------------------------------------------------------------

    def _check(self, file: Path) -> tuple[str, int]:
        """``(sha256, rank)`` of a usable LoRA file, or ``_Refused`` saying why not."""
        try:
            stat = file.stat()
        except OSError as exc:
            raise _Refused(f"cannot be read ({exc.strerror or exc})") from None
        if stat.st_size > self.limits.max_bytes:
            raise _Refused(f"{stat.st_size} bytes, more than {self.limits.max_bytes} "
                           "(LORA_MAX_BYTES)")
        rank = self._allowed_rank(file)
        return self._digest(file, stat), rank

    def _allowed_rank(self, file: Path) -> int:
        """The file's rank, or ``_Refused`` when it is no LoRA or its rank is over the limit."""
        rank = self._rank(file)
        if rank > self.limits.max_rank:
            raise _Refused(f"rank {rank} is above the highest this worker takes "
                           f"({self.limits.max_rank}, LORA_MAX_RANK)")
        return rank

    @staticmethod
    def _rank(file: Path) -> int:
        """The highest rank among the file's down matrices, from the safetensors header."""
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="pt") as tensors:
                keys = list(tensors.keys())
                if not any("lora" in key.lower() for key in keys):
                    raise _Refused("holds no LoRA weights (no 'lora' tensor: a full model "
                                   "checkpoint?)")
                ranks = [tensors.get_slice(key).get_shape()[0]
                         for key in keys if _DOWN.search(key)]
        except _Refused:
            raise
        except Exception:  # SafetensorError, OSError, a header that is not JSON ...
            raise _Refused("not a readable safetensors file (LoRAs are read from .safetensors "
                           "only, never from pickles)") from None
        return max(ranks, default=0)

    @staticmethod
    def _memo(file: Path, stat: os.stat_result) -> tuple[str, int, int, int]:
        """What a digest is remembered by: the file as it is now (a rewrite changes it)."""
        return (str(file), stat.st_size, stat.st_mtime_ns, stat.st_ino)

    def _digest(self, file: Path, stat: os.stat_result) -> str:
        memo = self._memo(file, stat)
        with self._lock:
            known = self._digests.get(memo)
        if known is not None:
            return known
        sha = hashlib.sha256()
        try:
            with file.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    sha.update(chunk)
        except OSError as exc:
            raise _Refused(f"cannot be read ({exc.strerror or exc})") from None
        digest = sha.hexdigest()
        with self._lock:
            self.hashed += 1
            self._digests[memo] = digest
        return digest


class _Download:
    """A fetched body, written to a hidden file in ``folder`` as it arrives and hashed on the
    way (one pass; memory holds a chunk). The file is made at the first chunk, so a URL refused
    before any answer leaves nothing behind; ``discard`` removes it unless it was renamed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sha = hashlib.sha256()
        self._path: Path | None = None
        self._out: BinaryIO | None = None

    def write(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        self._open().write(chunk)

    def finish(self) -> Path:
        """The complete file (empty when the body was)."""
        self._open().close()
        assert self._path is not None
        return self._path

    def discard(self) -> None:
        if self._out is not None:
            self._out.close()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    def _open(self) -> BinaryIO:
        if self._out is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=".fetching-", dir=self.folder)
            self._path, self._out = Path(name), os.fdopen(handle, "wb")
        return self._out


class _Refused(Exception):
    """Why one LoRA cannot be used (the text follows its label in the job's error)."""
