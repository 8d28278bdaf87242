"""A job's LoRA fields, as :mod:`.schema` checks them (every family: SD 1.x, SDXL, SD3, Flux).

===============  ===========  =================================================================
field            default      accepted
===============  ===========  =================================================================
``loras``        none         a list of at most ``max_per_job`` objects, each with exactly one
                              of ``name`` (a file in ``LORA_DIR``, ``.safetensors`` optional),
                              ``path`` (a relative path inside ``LORA_DIR``) or ``url``
                              (http(s), only with ``LORA_URL_FETCH``), and ``scale`` (0 to 2,
                              default 1); the same LoRA twice is refused
``lora``         none         RunPod's templates' single-LoRA shorthand: a string, read as a
                              URL when it is one, a path when it has a ``/``, else a name;
                              not with ``loras``
``lora_scale``   1.0          only with ``lora``: 0 to 2
===============  ===========  =================================================================

Only the shape is checked here (no file is opened, nothing fetched): :mod:`.lora_sources` finds
the files. Whether the worker has a LoRA folder and fetches LoRA URLs comes in the validation
context, as :class:`LoraPolicy`; a worker with neither refuses every LoRA field by name. A name
or path that could leave the folder (``..``, an absolute path, a backslash, a NUL) is refused
here already. Pure: no torch, no environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from adapters.stable_diffusion.field_checks import field_problem, show_value, whole_problem

LORA_FIELDS = ("loras", "lora", "lora_scale")
MAX_SCALE = 2.0
"""Largest LoRA scale (a LoRA at 2x its strength is already far past what it was trained for)."""
SOURCES = ("name", "path", "url")
MAX_NAME_CHARS = 200
MAX_PATH_CHARS = 500
MAX_URL_CHARS = 2000


@dataclass(frozen=True)
class LoraPolicy:
    """What this worker takes: names and paths (it has a ``LORA_DIR``), URLs
    (``LORA_URL_FETCH``), and how many LoRAs per job (``LORA_MAX_PER_JOB``)."""

    folder: bool = False
    urls: bool = False
    max_per_job: int = 4

    @property
    def enabled(self) -> bool:
        return self.folder or self.urls


OFF = LoraPolicy()
"""A worker without LoRA: every LoRA field is refused."""


@dataclass(frozen=True)
class LoraRequest:
    """One LoRA a job asks for: where it is (``source`` is ``name``, ``path`` or ``url``), its
    scale, and the field it came from (``loras[1]``, ``lora``), for messages."""

    source: str
    value: str
    scale: float = 1.0
    field: str = "loras[0]"

    @property
    def label(self) -> str:
        """The LoRA in a message: its field and name or path; a URL without its query, which
        may hold a token."""
        shown = url_label(self.value) if self.source == "url" else repr(self.value)
        return f"{self.field} {shown}"


def url_label(url: str) -> str:
    """``scheme://host/path`` of ``url``, at most 100 characters: no user, no query, no
    fragment (a download token rides in the query)."""
    try:
        parts = urlsplit(url)
        text = f"{parts.scheme}://{parts.hostname or '?'}{parts.path}"
    except ValueError:
        text = "(not a valid URL)"
    return text if len(text) <= 100 else text[:97] + "..."


def checked_loras(value: Any, *, policy: LoraPolicy, given: frozenset[str]) -> tuple[
        LoraRequest, ...]:
    """The ``loras`` field as LoRAs asked for, or raise the schema's error naming each bad entry."""
    _require(policy)
    if not isinstance(value, list | tuple):
        raise field_problem(f"must be a list of LoRAs (got {show_value(value)})")
    if len(value) > policy.max_per_job:
        raise field_problem(f"at most {policy.max_per_job} LoRAs per job (LORA_MAX_PER_JOB; got "
                            f"{len(value)})")
    if "lora" in given:
        raise field_problem("give loras or lora, not both")
    asked: list[LoraRequest] = []
    problems: list[str] = []
    for index, item in enumerate(value):
        where = f"loras[{index}]"
        try:
            request = _entry(item, where, policy)
        except ValueError as exc:
            problems.append(f"{where}{exc}")
            continue
        twin = next((r for r in asked if (r.source, r.value) == (request.source,
                                                                    request.value)), None)
        if twin is not None:
            problems.append(f"{where}: the same LoRA as {twin.field} (give it once, with the "
                            "scale wanted)")
        asked.append(request)
    if problems:
        raise whole_problem("; ".join(problems))
    return tuple(asked)


def checked_lora(value: Any, *, policy: LoraPolicy) -> str:
    """The ``lora`` shorthand (its source is read by :func:`requested`)."""
    _require(policy)
    if not isinstance(value, str):
        raise field_problem(f"must be a string: a LoRA name, path or URL (got "
                            f"{show_value(value)})")
    try:
        _source_value(shorthand_source(value), value, policy)
    except ValueError as exc:
        raise field_problem(str(exc).removeprefix(": ")) from None
    return value


def checked_lora_scale(value: Any, *, given: frozenset[str]) -> float:
    if "lora" not in given:
        raise field_problem("only with lora (the scale of that LoRA)")
    return _scale(value)


def requested(loras: Sequence[LoraRequest], lora: str | None,
              lora_scale: float | None) -> tuple[LoraRequest, ...]:
    """Every LoRA a validated job asks for, the shorthand included, in the job's order."""
    if lora is None:
        return tuple(loras)
    scale = 1.0 if lora_scale is None else lora_scale
    return (LoraRequest(shorthand_source(lora), lora, scale, "lora"),)


def shorthand_source(value: str) -> str:
    """``url``, ``path`` or ``name``: how the ``lora`` shorthand is read."""
    if value.strip()[:8].lower().startswith(("http://", "https://")):
        return "url"
    return "path" if "/" in value or "\\" in value else "name"


def _require(policy: LoraPolicy) -> None:
    if not policy.enabled:
        raise field_problem("LoRA is off on this worker (it has no LORA_DIR, and "
                            "LORA_URL_FETCH is off)")


def _entry(item: Any, where: str, policy: LoraPolicy) -> LoraRequest:
    """One ``loras`` entry, or ``ValueError`` whose text follows the entry's field name."""
    if not isinstance(item, Mapping):
        raise ValueError(f": must be an object such as {{\"name\": ..., \"scale\": 0.8}} (got "
                         f"{show_value(item)})")
    unknown = [str(key) for key in item if key not in (*SOURCES, "scale")]
    if unknown:
        raise ValueError(f".{unknown[0][:40]}: unknown field (a LoRA has one of name, path or "
                         "url, and scale)")
    sources = [key for key in SOURCES if item.get(key) is not None]
    if len(sources) != 1:
        raise ValueError(": give exactly one of name, path or url")
    source = sources[0]
    value = item[source]
    try:
        _source_value(source, value, policy)
    except ValueError as exc:
        raise ValueError(f".{source}{exc}") from None
    scale = item.get("scale")
    try:
        checked = 1.0 if scale is None else _scale(value=scale, plain=True)
    except ValueError as exc:
        raise ValueError(f".scale: {exc}") from None
    return LoraRequest(source, value, checked, where)


def _source_value(source: str, value: Any, policy: LoraPolicy) -> None:
    """Raise ``ValueError(": <problem>")`` unless ``value`` is a valid ``source``."""
    if not isinstance(value, str):
        raise ValueError(f": must be a string (got {show_value(value)})")
    if not value.strip():
        raise ValueError(": must not be empty")
    if source == "url":
        if not value.strip().lower().startswith(("http://", "https://")):
            raise ValueError(f": must be an http(s) URL (got {show_value(value)})")
        if len(value) > MAX_URL_CHARS:
            raise ValueError(f": must be at most {MAX_URL_CHARS} characters")
        if not policy.urls:
            raise ValueError(": URLs are not fetched by this worker (LORA_URL_FETCH is off): "
                             "put the LoRA in LORA_DIR and give its name")
        return
    if "\x00" in value or "\\" in value:
        raise ValueError(f": must not hold a backslash or NUL (got {show_value(value)})")
    if source == "name":
        if len(value) > MAX_NAME_CHARS:
            raise ValueError(f": must be at most {MAX_NAME_CHARS} characters")
        if "/" in value or value.startswith("."):
            raise ValueError(f": a file name in LORA_DIR, no folder (got {show_value(value)}); "
                             "give a path for a file in a subfolder")
    else:
        if len(value) > MAX_PATH_CHARS:
            raise ValueError(f": must be at most {MAX_PATH_CHARS} characters")
        if value.startswith(("/", "~")) or ".." in value.split("/"):
            raise ValueError(f": must stay inside LORA_DIR (a relative path without '..'; got "
                             f"{show_value(value)})")
    if not policy.folder:
        raise ValueError(f": this worker has no LORA_DIR to find {source}s in"
                         + (" (give a url)" if policy.urls else ""))


def _scale(value: Any, plain: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problem = f"must be a number (got {show_value(value)})"
    elif not math.isfinite(value) or not 0 <= value <= MAX_SCALE:
        problem = f"must be between 0 and {MAX_SCALE:g} (got {show_value(value)})"
    else:
        return float(value)
    if plain:
        raise ValueError(problem)
    raise field_problem(problem)
