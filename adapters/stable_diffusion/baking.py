"""Baking a Stable Diffusion pipeline into a folder, at image build: the diffusers side of
``python -m app bake-weights`` (``app/bake.py`` is its command line).

What :func:`bake` promises:

- **One download.** ``DiffusionPipeline.from_pretrained`` (the class the weights' own
  ``model_index.json`` names: SD, SDXL, SD3, Flux) with the given revision, variant and dtype;
  ``auto`` is the family's dtype (read from ``model_index.json`` first), so bf16 weights stay
  bf16 and fp16 ones fp16 (``model`` is a hub id or a local pipeline folder, checked by the worker's
  own rule, :func:`.loading.pipeline_source`). The hub token is passed as given, never printed.
- **Whole or nothing.** The pipeline is saved (safetensors, plain file names, so the
  production load finds them without a variant) into a temporary folder beside ``dest``,
  verified there, and renamed into place. A failed bake leaves nothing at ``dest``.
- **Verified through the production path.** The saved folder is loaded by
  ``StableDiffusionModel(folder, device="cpu").load()``, the worker's own code with
  ``local_files_only``, and makes one 64x64 image in one step.
- **Idempotent, never destructive.** ``dest`` already holding a bake of the same model,
  revision, variant and dtype (its ``podworker-bake.json`` says so) is verified again and kept:
  nothing is downloaded. ``dest`` holding anything else is refused; nothing is touched.
- **The weights once in the image.** The hub's download cache is a temporary folder deleted at
  the end, unless ``cache_dir`` names one to keep.
- **Readable by the worker.** Folders are 0755 and files 0644 whatever the umask.

Every failure is a ``BakeError`` with one line saying what to fix. torch and diffusers are
imported only inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.stable_diffusion.faults import describe
from adapters.stable_diffusion.loading import (
    download_failure,
    dtype_argument,
    pipeline_source,
    quiet_progress_bars,
)
from domain.errors import ModelError, PodworkerError
from domain.execution import DetachedContext
from domain.job import Artifact

RECORD_NAME = "podworker-bake.json"
"""The file in a baked folder that says what was baked (model, revision, variant, dtype)."""

DTYPES = ("auto", "float16", "bfloat16", "float32")
"""``auto`` is the family's own: bf16 for SD3 and Flux (trained in it; fp16 overflows), fp16
for the others (what the GPU loads them in)."""
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
    hub_offline: bool = False  # HF_HUB_OFFLINE is set: said in a download failure's hint

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


def bake(
    request: BakeRequest, *, token: str | None = None, say: Callable[[str], None] | None = None
) -> BakeResult:
    """Bake ``request.model`` into ``request.dest`` as the module docstring promises.

    Raises ``BakeError`` (one line) when the source, the destination, the download, the save or
    the verification fails; ``request.dest`` is then left as it was.
    """
    say = say or (lambda message: None)
    if request.dtype == "auto":
        request = dataclasses.replace(request, dtype=family_dtype_name(request, token=token))
    dest = request.dest.expanduser()
    if _already_baked(dest, request):
        say(f"{dest} already holds this bake; verifying it")
        seconds = verify(dest)
        return BakeResult(dest, list_files(dest), downloaded=False, verify_seconds=seconds)

    source = check_source(request.model)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.baking-", dir=dest.parent))
    except OSError as exc:
        raise BakeError(f"cannot create a folder beside {str(dest)!r}: {describe(exc)}") from exc
    try:
        staging = work / "pipeline"
        cache_dir = request.cache_dir or work / "hub-cache"
        where = "" if Path(source).is_dir() else " from the Hugging Face Hub"
        say(f"loading {request.model!r}{where} ({request.dtype})")
        save_pipeline(request, source, staging, cache_dir=cache_dir, token=token)
        (staging / RECORD_NAME).write_text(
            json.dumps(request.identity(), indent=2) + "\n", encoding="utf-8"
        )
        make_readable(staging)
        say("verifying: loading the saved folder as the worker does (local files only)")
        seconds = verify(staging)
        _move_into_place(staging, dest, request)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BakeResult(dest, list_files(dest), downloaded=True, verify_seconds=seconds)


def check_source(model: str) -> str:
    """``model`` as ``from_pretrained`` should get it; ``BakeError`` when it cannot be one."""
    if not model:
        raise BakeError("--model is empty: give a hub id or a diffusers pipeline folder")
    try:
        return pipeline_source(model)  # the worker's own rule, so a bake the worker refuses fails
    except ModelError as exc:
        raise BakeError(str(exc)) from None


def save_pipeline(
    request: BakeRequest, source: str, target: Path, *, cache_dir: Path, token: str | None
) -> None:
    """Load the pipeline (downloading it when ``source`` is a hub id) and save it to ``target``."""
    import torch

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
        pipe = diffusers.DiffusionPipeline.from_pretrained(source, **options)
    except Exception as exc:
        if Path(source).is_dir():
            message = f"could not load the pipeline in {source!r}: {describe(exc)}"
        else:
            message = download_failure(request.model, exc, revision=request.revision,
                                       variant=request.variant, offline=request.hub_offline)
        raise BakeError(message) from None
    try:
        # No variant: plain file names, which the worker's from_pretrained looks for.
        pipe.save_pretrained(str(target), safe_serialization=True)
    except Exception as exc:
        where = str(target)
        raise BakeError(f"could not save the pipeline to {where!r}: {describe(exc)}") from exc
    finally:
        del pipe
        gc.collect()


def family_dtype_name(request: BakeRequest, *, token: str | None) -> str:
    """``auto`` resolved: the dtype the family's weights are kept in (see :data:`DTYPES`),
    from the local folder's ``model_index.json`` or the hub's (one small download)."""
    from adapters.stable_diffusion.families import detect_family
    from adapters.stable_diffusion.pipelines import TRANSFORMER_FAMILIES

    source = check_source(request.model)
    folder = source
    if not Path(source).is_dir():
        try:
            from huggingface_hub import hf_hub_download

            index = hf_hub_download(source, "model_index.json", revision=request.revision,
                                    token=token, cache_dir=request.cache_dir)
        except Exception as exc:
            raise BakeError(download_failure(request.model, exc, revision=request.revision,
                                             variant=request.variant,
                                             offline=request.hub_offline)) from None
        folder = str(Path(index).parent)
    try:
        spec = detect_family(folder)
    except ModelError as exc:
        raise BakeError(f"--dtype auto: {exc}; give --dtype float16 or bfloat16") from None
    return "bfloat16" if spec.family in TRANSFORMER_FAMILIES else "float16"


def verify(folder: Path) -> float:
    """Load ``folder`` with the worker's model on the CPU and make one small image; seconds."""
    from adapters.stable_diffusion.model import StableDiffusionModel

    started = time.monotonic()
    model = StableDiffusionModel(str(folder), device="cpu")
    try:
        model.load()
        output = model.run(dict(VERIFY_INPUT), DetachedContext("bake-weights-verify"))
    except PodworkerError as exc:
        raise BakeError(f"the baked pipeline does not work: {_one_line(str(exc))}") from exc
    finally:
        del model
        gc.collect()
    image = output[0]["image"] if isinstance(output, list) and output else None
    if not isinstance(image, Artifact) or not image.data.startswith(b"\x89PNG"):
        raise BakeError("the baked pipeline loaded but did not make a PNG image")
    return time.monotonic() - started


def list_files(folder: Path) -> list[tuple[str, int]]:
    """Every file under ``folder`` as (relative path, bytes), sorted."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return [(p.relative_to(folder).as_posix(), p.stat().st_size) for p in files]


def make_readable(folder: Path) -> None:
    """Folders 0755 and files 0644: the worker reads the weights as a user other than the baker."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


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
        raise BakeError(f"{str(record)!r} cannot be read: {describe(exc)}") from exc
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
        raise BakeError(f"could not move the bake into {str(dest)!r}: {describe(exc)}") from exc


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""
