"""What a handler returns or yields, read the way RunPod's SDK (1.12) reads it.

- A returned dict loses its ``"error"`` and ``"refresh_worker"`` keys; a truthy ``error`` fails
  the job, a truthy ``refresh_worker`` asks for a fresh worker after it; an empty rest is no
  output. Anything else returned is the output as it is.
- A yielded dict with a truthy ``"error"`` ends the stream: the job fails with ``str(error)``
  and that chunk is not streamed.

One difference, on purpose: an ``error`` that is not a string (``{"error": {"code": 3}}``) is
sent as its JSON text. The SDK sends the object, and the platform marks a job failed only when
``error`` is a string, so the SDK's job shows COMPLETED with an error; here it is FAILED.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from domain.errors import ModelError


class HandlerFailed(ModelError):
    """The handler failed its job on purpose (``{"error": ...}``): the job's error is exactly
    what it said."""


@dataclass(frozen=True)
class Returned:
    """A handler's return value as the SDK reads it."""

    output: Any
    error: str | None = None
    fresh_worker: bool = False


def read_return(value: Any) -> Returned:
    """``value`` (what the handler returned) as output, error and ``refresh_worker``."""
    if not isinstance(value, dict):
        return Returned(value)
    rest = dict(value)
    error = rest.pop("error", None)
    fresh = bool(rest.pop("refresh_worker", None))
    output = rest if rest else None
    return Returned(output, error_text(error) if error else None, fresh)


def error_text(error: Any) -> str:
    """A handler's ``error`` value as the job's error string (JSON text when not a string)."""
    if isinstance(error, str):
        return error
    try:
        return json.dumps(error, default=str)
    except (TypeError, ValueError):
        return str(error)


def check_chunk(chunk: Any) -> Any:
    """``chunk`` as streamed; ``HandlerFailed`` when it is an error (the SDK's ``str(error)``)."""
    if isinstance(chunk, dict) and chunk.get("error"):
        raise HandlerFailed(str(chunk["error"]))
    return chunk
