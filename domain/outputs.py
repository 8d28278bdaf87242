"""Finding the binary outputs (``Artifact``s) in a model's output and putting references there.

A model returns JSON values with ``Artifact`` objects anywhere inside (for Stable Diffusion,
``[{"image": Artifact, "seed": 1}, ...]``). The delivery stage stores each artifact and calls
:func:`replace_artifacts` with the references, in the order :func:`find_artifacts` found them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from domain.errors import ModelError, PermanentError, TransientError, UploadFailed
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


def store_one_by_one(
    store: Callable[[str, int, Artifact], str],
    job_id: str,
    artifacts: Sequence[Artifact],
    first_index: int = 0,
) -> list[str]:
    """The ``Storage`` port's ``store_all`` for a storage that stores one output at a time:
    output ``i`` at index ``first_index + i``, in order, the first failure raised."""
    return [store(job_id, first_index + i, artifact) for i, artifact in enumerate(artifacts)]


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
    """The error string a job's result carries for ``exc``: clear, bounded, one line or a few.

    Never raises, whatever ``exc`` is: a model may raise an exception whose ``__str__`` itself
    raises (or calls ``sys.exit``); the type's name is then reported with a note.
    """
    try:
        name = type(exc).__name__
    except BaseException:  # a type whose name cannot even be read
        name = "exception"
    try:
        detail = str(exc)
    except BaseException:
        detail = "(its message could not be read)"
    if isinstance(exc, PermanentError | TransientError):
        text = detail or name
    else:
        text = f"{name}: {detail}" if detail else name
    if len(text) > limit:
        text = text[: limit - 15] + " ... (truncated)"
    return text

_EXTENSION = re.compile(r"[A-Za-z0-9]{1,16}")


def output_file_name(index: int, artifact: Artifact) -> str:
    """``{index}.{extension}``: the name every storage gives output ``index``.

    The extension is limited to letters and digits (at most 16), so no model output can name a
    path or an S3 key of its own choosing; anything else raises ``UploadFailed``.
    """
    if not _EXTENSION.fullmatch(artifact.extension):
        raise UploadFailed(
            f"output {index} has an invalid file extension (letters and digits only, at most 16)"
        )
    return f"{index}.{artifact.extension}"
