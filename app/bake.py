"""``python -m app bake-weights``: put a Stable Diffusion pipeline into a folder, at image build.

Why it exists: a pod must start without downloading anything. Weights are gigabytes, and a
worker that fetches them at start-up pays for it on every cold start (and fails when the hub
is slow or down). The Dockerfile runs this command once, at build time; the worker then loads
the folder with ``local_files_only`` (``MODEL_PATH``). Any broken bake fails the image build,
not the first job.

What it promises:

- **One download.** ``StableDiffusionPipeline.from_pretrained`` with the given revision,
  variant and dtype (``--model`` is a hub id or a local pipeline folder). The hub token is read
  from ``--token-file`` (the ``hf_token`` build secret) or else ``HF_TOKEN``; it is never
  printed, and it is masked in any error message that would contain it.
- **Whole or nothing.** The pipeline is saved (safetensors, plain file names, so the
  production load finds them without a variant) into a temporary folder beside ``--dest``,
  verified there, and renamed into place. A failed bake leaves nothing at ``--dest``.
- **Verified through the production path.** The saved folder is loaded by
  ``StableDiffusionModel(folder, device="cpu").load()``, the worker's own code with
  ``local_files_only``, and makes one 64x64 image in one step. Exit 0 means the worker will
  load these weights.
- **Idempotent, never destructive.** ``--dest`` already holding a bake of the same model,
  revision, variant and dtype (its ``podworker-bake.json`` says so) is verified again and kept:
  nothing is downloaded. ``--dest`` holding anything else is refused; nothing is touched.
- **The weights once in the image.** The hub's download cache is a temporary folder deleted at
  the end, unless ``--cache-dir`` names one to keep (the Dockerfile's BuildKit cache mount).
- **Readable by the worker.** Folders are 0755 and files 0644 whatever the umask: the image
  bakes as root, the worker runs as another user.
- Exit codes: 0 baked or already baked; 1 the bake failed, with one line on stderr starting
  ``podworker bake-weights:``; 2 bad arguments. torch and diffusers are imported only once the
  arguments and folders have been checked.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

RECORD_NAME = "podworker-bake.json"
"""The file in a baked folder that says what was baked (model, revision, variant, dtype)."""

DTYPES = ("float16", "float32")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
VERIFY_INPUT: dict[str, Any] = {
    "prompt": "a photo of a lighthouse",
    "width": 64,
    "height": 64,
    "num_inference_steps": 1,
    "seed": 0,
}
"""The verification job: the smallest image the schema accepts, one step (about a second on a
build machine's CPU for SD 1.5), enough to run the text encoder, the UNet and the VAE once."""

_PREFIX = "podworker bake-weights"


class BakeError(Exception):
    """The bake failed; the message is one line saying what to fix."""


@dataclass(frozen=True)
class BakeRequest:
    """What to bake, and where. ``revision`` and ``variant`` are None for the hub's defaults."""

    model: str
    dest: Path
    revision: str | None = None
    variant: str | None = None
    dtype: str = "float16"
    cache_dir: Path | None = None

    def identity(self) -> dict[str, str | None]:
        """What makes two bakes the same (written to, and compared with, RECORD_NAME)."""
        local = Path(self.model).expanduser()
        model = str(local.resolve()) if local.is_dir() else self.model
        return {
            "model": model,
            "revision": self.revision,
            "variant": self.variant,
            "dtype": self.dtype,
        }


@dataclass(frozen=True)
class BakeResult:
    dest: Path
    files: list[tuple[str, int]]  # (path relative to dest, bytes), sorted by path
    downloaded: bool  # False when dest already held this bake
    verify_seconds: float

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


# --- command line ------------------------------------------------------------------------------


def add_bake_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bake-weights`` options (the subcommand itself is declared in ``app.cli``)."""
    parser.add_argument(
        "--model", required=True, metavar="MODEL_ID_OR_PATH",
        help="hub id (such as stable-diffusion-v1-5/stable-diffusion-v1-5) or a local "
        "diffusers pipeline folder",
    )
    parser.add_argument(
        "--dest", required=True, type=Path, metavar="DIR",
        help="folder to bake into (MODEL_PATH at run time); created whole or not at all",
    )
    parser.add_argument(
        "--revision", default=None, metavar="R",
        help="hub branch, tag or commit (pin a commit for reproducible images); empty: default",
    )
    parser.add_argument(
        "--variant", default=None, metavar="V",
        help="hub weight variant to download, such as fp16; empty: the plain weights",
    )
    parser.add_argument(
        "--dtype", default="float16", choices=DTYPES,
        help="dtype the weights are saved in (default: float16, what the GPU loads)",
    )
    parser.add_argument(
        "--cache-dir", default=None, type=Path, metavar="DIR",
        help="hub download cache to use and keep (default: a temporary one, deleted)",
    )
    parser.add_argument(
        "--token-file", default=None, type=Path, metavar="FILE",
        help="file holding a hub token (a build secret); used when it exists, else HF_TOKEN",
    )


def bake_from_args(args: argparse.Namespace, out: TextIO | None = None,
                   err: TextIO | None = None) -> int:
    """Run the bake the parsed arguments ask for; print progress and a summary. Exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    request = BakeRequest(
        model=args.model.strip(),
        dest=args.dest,
        revision=(args.revision or "").strip() or None,
        variant=(args.variant or "").strip() or None,
        dtype=args.dtype,
        cache_dir=args.cache_dir,
    )
    token = read_token(args.token_file)
    try:
        result = bake(request, token=token, out=out)
    except BakeError as exc:
        message = str(exc).replace(token, "***") if token else str(exc)
        print(f"{_PREFIX}: {' '.join(message.split())}", file=err, flush=True)
        return 1
    for line in summary(request, result):
        print(line, file=out)
    out.flush()
    return 0


def read_token(token_file: Path | None) -> str | None:
    """The hub token: the token file's content when it exists and is not empty, else HF_TOKEN."""
    if token_file is not None and token_file.is_file():
        token = token_file.read_text(encoding="utf-8").strip()
        if token:
            return token
    return os.environ.get("HF_TOKEN", "").strip() or None


def summary(request: BakeRequest, result: BakeResult) -> list[str]:
    """The lines printed after a bake: what, where, every file with its size, the total."""
    what = request.model
    details = [
        f"revision {request.revision}" if request.revision else None,
        f"variant {request.variant}" if request.variant else None,
        request.dtype,
    ]
    verb = "baked" if result.downloaded else "already baked (nothing downloaded)"
    lines = [f"{_PREFIX}: {verb}: {what} ({', '.join(d for d in details if d)}) in {result.dest}"]
    width = max((len(name) for name, _ in result.files), default=0)
    lines += [f"  {name:<{width}}  {_size(size):>10}" for name, size in result.files]
    lines.append(
        f"{_PREFIX}: {len(result.files)} files, {_size(result.total_bytes)}; verified in "
        f"{result.verify_seconds:.1f} s: loaded with local files only, made a 64x64 image"
    )
    return lines


# --- the bake ----------------------------------------------------------------------------------


def bake(
    request: BakeRequest, *, token: str | None = None, out: TextIO | None = None
) -> BakeResult:
    """Bake ``request.model`` into ``request.dest`` as the module docstring promises.

    Raises ``BakeError`` (one line) when the source, the destination, the download, the save or
    the verification fails; ``request.dest`` is then left as it was.
    """
    out = out or sys.stdout
    dest = request.dest.expanduser()
    if _already_baked(dest, request):
        _say(out, f"{dest} already holds this bake; verifying it")
        seconds = verify(dest)
        return BakeResult(dest, list_files(dest), downloaded=False, verify_seconds=seconds)

    source = check_source(request.model)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.baking-", dir=dest.parent))
    except OSError as exc:
        raise BakeError(f"cannot create a folder beside {str(dest)!r}: {_describe(exc)}") from exc
    try:
        staging = work / "pipeline"
        cache_dir = request.cache_dir or work / "hub-cache"
        where = "" if Path(source).is_dir() else " from the Hugging Face Hub"
        _say(out, f"loading {request.model!r}{where} ({request.dtype})")
        save_pipeline(request, source, staging, cache_dir=cache_dir, token=token)
        (staging / RECORD_NAME).write_text(
            json.dumps(request.identity(), indent=2) + "\n", encoding="utf-8"
        )
        make_readable(staging)
        _say(out, "verifying: loading the saved folder as the worker does (local files only)")
        seconds = verify(staging)
        _move_into_place(staging, dest, request)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BakeResult(dest, list_files(dest), downloaded=True, verify_seconds=seconds)


def check_source(model: str) -> str:
    """``model`` as ``from_pretrained`` should get it; ``BakeError`` when it cannot be one."""
    if not model:
        raise BakeError("--model is empty: give a hub id or a diffusers pipeline folder")
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BakeError(
                f"model {model!r} is a file: a diffusers pipeline folder (with "
                "model_index.json) or a hub id is needed; single-file checkpoints are not "
                "supported"
            )
        if not (path / "model_index.json").is_file():
            raise BakeError(
                f"model folder {model!r} is not a diffusers pipeline (no model_index.json)"
            )
        return str(path)
    looks_like_a_path = model.startswith(("/", ".", "~")) or model.count("/") > 1
    if looks_like_a_path or not _is_hub_id(model):
        raise BakeError(f"model folder {model!r} not found (and it is not a hub id)")
    return model


def save_pipeline(
    request: BakeRequest, source: str, target: Path, *, cache_dir: Path, token: str | None
) -> None:
    """Load the pipeline (downloading it when ``source`` is a hub id) and save it to ``target``."""
    import torch

    from adapters.stable_diffusion.model import dtype_argument, quiet_progress_bars

    # diffusers' annotations are partial: use it as an untyped library.
    diffusers: Any = importlib.import_module("diffusers")

    quiet_progress_bars()
    options: dict[str, Any] = {
        "local_files_only": False,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
        "cache_dir": str(cache_dir),
        **dtype_argument(getattr(torch, request.dtype)),
    }
    if request.revision:
        options["revision"] = request.revision
    if request.variant:
        options["variant"] = request.variant
    if token:
        options["token"] = token
    try:
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(source, **options)
    except Exception as exc:
        raise BakeError(_load_failure(request, source, exc)) from exc
    try:
        # No variant: plain file names, which the worker's from_pretrained looks for.
        pipe.save_pretrained(str(target), safe_serialization=True)
    except Exception as exc:
        where = str(target)
        raise BakeError(f"could not save the pipeline to {where!r}: {_describe(exc)}") from exc
    finally:
        del pipe
        gc.collect()


def verify(folder: Path) -> float:
    """Load ``folder`` with the worker's model on the CPU and make one small image; seconds."""
    from adapters.stable_diffusion.model import StableDiffusionModel
    from domain.errors import PodworkerError
    from domain.job import Artifact

    started = time.monotonic()
    model = StableDiffusionModel(str(folder), device="cpu")
    try:
        model.load()
        output = model.run(dict(VERIFY_INPUT), _VerifyContext())
    except PodworkerError as exc:
        raise BakeError(f"the baked pipeline does not work: {_one_line(str(exc))}") from exc
    finally:
        del model
        gc.collect()
    image = output[0]["image"] if isinstance(output, list) and output else None
    if not isinstance(image, Artifact) or not image.data.startswith(b"\x89PNG"):
        raise BakeError("the baked pipeline loaded but did not make a PNG image")
    return time.monotonic() - started


class _VerifyContext:
    """The job context of the verification image: never cancelled, progress ignored."""

    job_id = "bake-weights-verify"

    def check_cancelled(self) -> None:
        return None

    def progress(self, update: Any) -> None:
        return None


def list_files(folder: Path) -> list[tuple[str, int]]:
    """Every file under ``folder`` as (relative path, bytes), sorted."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return [(p.relative_to(folder).as_posix(), p.stat().st_size) for p in files]


def make_readable(folder: Path) -> None:
    """Folders 0755 and files 0644: the worker reads the weights as a user other than the baker."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


# --- inside ------------------------------------------------------------------------------------


def _already_baked(dest: Path, request: BakeRequest) -> bool:
    """True when ``dest`` holds this very bake; ``BakeError`` when it holds anything else."""
    if not dest.exists():
        return False
    if not dest.is_dir():
        raise BakeError(f"--dest {str(dest)!r} is a file; give a new or empty folder")
    if not any(dest.iterdir()):
        return False
    record = dest / RECORD_NAME
    if not (dest / "model_index.json").is_file() or not record.is_file():
        raise BakeError(
            f"--dest {str(dest)!r} is not empty and holds no podworker bake ({RECORD_NAME} "
            "missing); nothing was changed: choose a new or empty folder"
        )
    try:
        baked = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BakeError(f"{str(record)!r} cannot be read: {_describe(exc)}") from exc
    wanted = request.identity()
    if baked != wanted:
        differ = ", ".join(
            f"{key} {baked.get(key)!r} (not {wanted[key]!r})"
            for key in wanted if baked.get(key) != wanted[key]
        )
        raise BakeError(
            f"--dest {str(dest)!r} already holds another bake: {differ}; nothing was changed: "
            "remove it or choose another folder"
        )
    return True


def _move_into_place(staging: Path, dest: Path, request: BakeRequest) -> None:
    try:
        # rename(2) replaces an empty folder atomically and fails on a non-empty one.
        os.replace(staging, dest)
    except OSError as exc:
        if _already_baked(dest, request):
            return  # another bake of the same weights finished first: keep it
        raise BakeError(f"could not move the bake into {str(dest)!r}: {_describe(exc)}") from exc


def _load_failure(request: BakeRequest, source: str, exc: BaseException) -> str:
    """One line saying why ``from_pretrained`` failed, with the likely fix."""
    if Path(source).is_dir():
        return f"could not load the pipeline in {source!r}: {_describe(exc)}"
    names = {type(e).__name__ for e in _chain(exc)}
    text = " ".join(str(e) for e in _chain(exc)).lower()
    if "GatedRepoError" in names or " 401" in text or "401 client error" in text:
        hint = ("the model is gated or private: accept its licence on the hub and pass a token "
                "(the hf_token build secret or HF_TOKEN)")
    elif "RepositoryNotFoundError" in names:
        hint = "no such model on the hub (or it is private: pass a token)"
    elif "RevisionNotFoundError" in names:
        hint = f"the hub has no revision {request.revision!r} of it"
    elif "OfflineModeIsEnabled" in names or _truthy(os.environ.get("HF_HUB_OFFLINE")):
        hint = "downloads are off (HF_HUB_OFFLINE is set): unset it for the bake"
    elif names & {"ConnectError", "ConnectionError", "ConnectTimeout", "gaierror", "timeout",
                  "TimeoutError", "ReadTimeout", "LocalEntryNotFoundError"}:
        hint = "the Hugging Face Hub could not be reached: does the build have network access?"
    elif request.variant and "variant" in text:
        hint = f"the model may have no {request.variant!r} variant: try --variant ''"
    else:
        hint = "not a local folder, and the download failed"
    return f"could not download {request.model!r}: {hint} ({_describe(exc)})"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _is_hub_id(text: str) -> bool:
    """``name`` or ``owner/name`` made of letters, digits, ``-``, ``_`` and ``.``."""
    parts = text.split("/")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    return 1 <= len(parts) <= 2 and all(
        part and part[0].isalnum() and set(part) <= allowed for part in parts
    )


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _describe(exc: BaseException) -> str:
    """``Class: first line of the message``, at most 300 characters."""
    first = _one_line(str(exc))
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def _say(out: TextIO, message: str) -> None:
    print(f"{_PREFIX}: {message}", file=out, flush=True)


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"
