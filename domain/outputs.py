"""Finding the binary outputs (``Artifact``s) in a model's output and putting references there.

A model returns JSON values with ``Artifact`` objects anywhere inside (for Stable Diffusion,
``[{"image": Artifact, "seed": 1}, ...]``). The delivery stage stores each artifact and calls
:func:`replace_artifacts` with the references, in the order :func:`find_artifacts` found them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from domain.errors import ModelError, PermanentError, TransientError
from domain.job import Artifact


def find_artifacts(output: Any) -> list[Artifact]:
    """Every artifact in ``output``, depth first, in a stable order."""
    return list(_walk(output))


def _walk(value: Any) -> Iterator[Artifact]:
    if isinstance(value, Artifact):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk(item)


def replace_artifacts(output: Any, references: list[str]) -> Any:
    """A copy of ``output`` with the n-th artifact replaced by ``references[n]``."""
    refs = iter(references)

    def swap(value: Any) -> Any:
        if isinstance(value, Artifact):
            return next(refs)
        if isinstance(value, dict):
            return {key: swap(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [swap(item) for item in value]
        return value

    return swap(output)


def ensure_json(output: Any) -> None:
    """Raise ``ModelError`` when ``output`` (artifacts replaced) cannot be sent as JSON."""
    try:
        json.dumps(output, allow_nan=False, default=_refuse)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"model output cannot be sent as JSON: {exc}") from None


def _refuse(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("NaN or infinity")
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def describe_error(exc: BaseException, *, limit: int = 2000) -> str:
    """The error string a job's result carries for ``exc``: clear, bounded, one line or a few."""
    if isinstance(exc, PermanentError | TransientError):
        text = str(exc) or type(exc).__name__
    else:
        detail = str(exc)
        text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    if len(text) > limit:
        text = text[: limit - 15] + " ... (truncated)"
    return text
