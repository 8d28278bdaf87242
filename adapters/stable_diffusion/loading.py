"""Finding and loading a diffusers pipeline: shared by the model (``load``) and the bake.

Every function raises ``ModelError`` with one line saying what to fix; torch and diffusers are
imported only inside the functions that need them.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

from adapters.stable_diffusion.faults import describe
from domain.errors import ModelError

_HUB_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def is_hub_id(text: str) -> bool:
    """``name`` or ``owner/name``, each part a letter or digit then letters, digits, ``.-_``."""
    parts = text.split("/")
    return 1 <= len(parts) <= 2 and all(_HUB_PART.fullmatch(part) for part in parts)


def model_source(model_path: str | None) -> str:
    """``MODEL_PATH`` as :func:`pipeline_source` gives it; ``ModelError`` when it is empty."""
    raw = (model_path or "").strip()
    if not raw:
        raise ModelError(
            "no model path: give a diffusers pipeline folder (MODEL_PATH) or a hub id that "
            "is in the local cache"
        )
    return pipeline_source(raw)


def pipeline_source(raw: str) -> str:
    """``raw`` (a folder or a hub id) as ``from_pretrained`` should get it.

    A folder must exist and hold ``model_index.json``; anything that is not a folder must look
    like a hub id. Raises ``ModelError`` otherwise (an empty ``raw`` is the caller's to report).
    """
    path = Path(raw).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(
                f"model {raw!r} is a file: a diffusers pipeline folder (with model_index.json) "
                "or a hub id is needed; single-file checkpoints are not supported"
            )
        if not (path / "model_index.json").is_file():
            raise ModelError(
                f"model folder {raw!r} is not a diffusers pipeline (no model_index.json)"
            )
        return str(path)
    looks_like_a_path = raw.startswith(("/", ".", "~")) or raw.count("/") > 1
    if looks_like_a_path or not is_hub_id(raw):
        raise ModelError(f"model folder {raw!r} not found (and it is not a hub id)")
    return raw


def load_failure(source: str, exc: BaseException, *, allow_download: bool) -> str:
    """Why ``from_pretrained(source)`` failed, in one line, with the likely fix."""
    where = f"could not load a Stable Diffusion pipeline from {source!r}"
    if not Path(source).exists():
        if allow_download:
            where += " (not a local folder; the download failed)"
        else:
            where += (
                " (not a local folder, not in the local Hugging Face cache, and downloads "
                "are off: allow them with MODEL_ALLOW_DOWNLOAD=true)"
            )
    return f"{where}: {describe(exc)}"


def import_stack() -> tuple[Any, Any]:
    """``(torch, diffusers)``; ``ModelError`` saying what to install if missing."""
    try:
        import diffusers
        import torch
    except ImportError as exc:
        raise ModelError(
            f"the Stable Diffusion model needs torch, diffusers and transformers ({exc}); "
            "install them with: pip install 'podworker[sd]'"
        ) from None
    return torch, diffusers


def dtype_argument(dtype: Any) -> dict[str, Any]:
    """``from_pretrained``'s dtype keyword: ``dtype`` since diffusers deprecated ``torch_dtype``
    (2026, diffusers PR 14205); older releases know only ``torch_dtype``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def resolve_device(torch: Any, requested: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as the device to use."""
    wanted = requested.strip().lower()
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cpu":
        return "cpu"
    if re.fullmatch(r"cuda(:\d+)?", wanted):
        if not torch.cuda.is_available():
            raise ModelError(f"device {requested!r} asked for, but no CUDA device is available")
        return wanted
    raise ModelError(f"unknown device {requested!r}: use auto, cuda, cuda:N or cpu")


def quiet_progress_bars() -> None:
    """No tqdm bars from diffusers or transformers (loading, saving): the worker's logs are one
    JSON object a line. A process-wide switch of those two libraries, and nothing else."""
    for library in ("diffusers", "transformers"):
        logging: Any = importlib.import_module(f"{library}.utils.logging")
        logging.disable_progress_bar()
    quiet_hub_logs()


def quiet_hub_logs() -> None:
    """huggingface_hub's log records through the worker's own handler only, each once.

    When first imported, huggingface_hub gives its logger a handler of its own (plain lines on
    standard error) and lets records propagate too, so every warning (a download retried, say)
    was printed twice, once not as JSON. Its handlers are dropped; propagation stays."""
    import huggingface_hub.utils.logging as hub_logging  # its import adds the handler

    library = hub_logging.get_logger("huggingface_hub")
    for handler in list(library.handlers):
        library.removeHandler(handler)


def download_failure(
    model: str, exc: BaseException, *, revision: str | None, variant: str | None, offline: bool
) -> str:
    """One line saying why downloading ``model`` from the hub failed, with the likely fix.
    ``offline`` says whether HF_HUB_OFFLINE is set."""
    names = {type(e).__name__ for e in _chain(exc)}
    text = " ".join(str(e) for e in _chain(exc)).lower()
    if "GatedRepoError" in names or " 401" in text or "401 client error" in text:
        hint = ("the model is gated or private: accept its licence on the hub and pass a token "
                "(the hf_token build secret or HF_TOKEN)")
    elif "RepositoryNotFoundError" in names:
        hint = "no such model on the hub (or it is private: pass a token)"
    elif "RevisionNotFoundError" in names:
        hint = f"the hub has no revision {revision!r} of it"
    elif "OfflineModeIsEnabled" in names or offline:
        hint = "downloads are off (HF_HUB_OFFLINE is set): unset it to download"
    elif names & {"ConnectError", "ConnectionError", "ConnectTimeout", "gaierror", "timeout",
                  "TimeoutError", "ReadTimeout", "LocalEntryNotFoundError"}:
        hint = "the Hugging Face Hub could not be reached: does this machine have network access?"
    elif variant and "variant" in text:
        hint = f"the model may have no {variant!r} variant: try --variant ''"
    else:
        hint = "not a local folder, and the download failed"
    return f"could not download {model!r}: {hint} ({describe(exc)})"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
