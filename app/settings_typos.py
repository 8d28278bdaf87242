"""Settings that look like podworker's but are not read: typos caught at start, not ignored.

pydantic-settings ignores names it does not know (``extra="ignore"``: the environment holds
every other program's variables too), so ``SD_PIPLINE=sdxl`` or ``MODLE_PATH`` in ``.env`` would
change nothing, silently. :func:`suspicious_settings` finds the names, in the environment or in
the ``.env`` file, that are probably meant for podworker:

- **close to a known name**: within a small edit distance (one edit for names of up to six
  characters, two for longer ones; a swap of two neighbours is one edit), the same but for
  case (names are case-sensitive), or, for a setting read under both namings, the seed name
  with ``RUNPOD_`` put on or taken off (``RUNPOD_WEBHOOK_GET_WORK``: the namings mixed);
- **under a known prefix**: a name starting with a prefix that at least
  :data:`PREFIX_MIN_NAMES` known names share (``SD_``, ``BUCKET_``, ``MODEL_``, ``INPUT_``,
  ``WEBHOOK_``, ``RUNPOD_WEBHOOK_`` ...), but not one of them.

``RUNPOD_`` alone is the platform's namespace (RunPod sets ``RUNPOD_GPU_COUNT``,
``RUNPOD_PUBLIC_IP`` and many more on every pod), and ``JOB_`` a word many programs use, so a
name under them is flagged only when it is close to a known one or under a longer known prefix
(``RUNPOD_WEBHOOK_``). The known names
are the settings model's own fields and their ``RUNPOD_*`` aliases, read from
:class:`~app.settings.Settings`: a setting added there is known here with no other change.
Nothing here reads ``os.environ``: the caller passes the environment in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import AliasChoices

from app.settings import Settings

PREFIX_MIN_NAMES = 3
"""A prefix is podworker's when at least this many known names share it."""

SHARED_PREFIXES = frozenset({"RUNPOD_", "JOB_"})
"""Prefixes other programs' variables have too (RunPod's platform and SDK set many
``RUNPOD_*``; schedulers and CI systems set ``JOB_NAME``, ``JOB_ID`` ...): a name under them is
flagged only when close to a known one or under a longer known prefix."""


@dataclass(frozen=True)
class Suspect:
    """An unknown name that looks like a setting: where it was set and the likely meaning."""

    name: str
    source: str  # "environment" or the .env file's path
    suggestion: str | None  # the known name it is probably meant to be

    def describe(self) -> str:
        where = "in the environment" if self.source == "environment" else f"in {self.source}"
        hint = f"did you mean {self.suggestion}?" if self.suggestion else "not a podworker setting"
        return f"unknown setting {self.name} {where} is ignored: {hint}"


def known_names() -> frozenset[str]:
    """Every name the settings read: each field's own and its aliases."""
    return frozenset(name for names in _names_by_field() for name in names)


def two_namings() -> frozenset[str]:
    """The names of the settings read under two names (``WEBHOOK_GET_WORK`` and
    ``RUNPOD_WEBHOOK_GET_JOB``)."""
    return frozenset(name for names in _names_by_field() if len(names) > 1 for name in names)


def _names_by_field() -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            found.append((alias,))
        elif isinstance(alias, AliasChoices):
            found.append(tuple(choice for choice in alias.choices if isinstance(choice, str)))
        else:
            found.append((name,))
    return found


def known_prefixes(names: Iterable[str]) -> frozenset[str]:
    """Prefixes (``SD_``, ``RUNPOD_WEBHOOK_`` ...) that at least :data:`PREFIX_MIN_NAMES` of
    ``names`` share, the prefixes other programs use too left out."""
    counts: dict[str, int] = {}
    for name in names:
        parts = name.split("_")
        for size in range(1, len(parts)):
            prefix = "_".join(parts[:size]) + "_"
            counts[prefix] = counts.get(prefix, 0) + 1
    return frozenset(prefix for prefix, count in counts.items()
                     if count >= PREFIX_MIN_NAMES and prefix not in SHARED_PREFIXES)


def suspicious_settings(
    environ: Mapping[str, str], env_file: str | Path | None = None, *, prefixes: bool = True
) -> list[Suspect]:
    """The names in ``environ`` and in ``env_file`` (when it exists) that look like podworker
    settings but are not any, each once, the ``.env`` file's first, sorted by name.
    ``prefixes=False`` flags only names close to a known one: for a RunPod handler, whose own
    settings (``MODEL_NAME``, ``MAX_MODEL_LEN``...) share podworker's prefixes."""
    known = known_names()
    dual = two_namings()
    under = tuple(known_prefixes(known)) if prefixes else ()
    sources: dict[str, str] = {}
    for name in _dotenv_names(env_file):
        sources.setdefault(name, str(env_file))
    for name in environ:
        sources.setdefault(name, "environment")
    suspects = []
    for name in sorted(sources):
        if name in known:
            continue
        suggestion = closest_known(name, known, dual)
        if suggestion is not None or (under and name.startswith(under)):
            suspects.append(Suspect(name, sources[name], suggestion))
    return suspects


def closest_known(
    name: str, known: Iterable[str], two_namings: frozenset[str] = frozenset()
) -> str | None:
    """The known name ``name`` is most likely a typo of, or None when none is close.
    ``two_namings`` are the names of settings read under both namings (seed and ``RUNPOD_*``)."""
    upper = name.upper()
    for other_naming in (upper.removeprefix("RUNPOD_"), f"RUNPOD_{upper}"):
        if other_naming != upper and other_naming in two_namings:
            return other_naming  # the two namings mixed: RUNPOD_WEBHOOK_GET_WORK
    best: tuple[int, str] | None = None
    for candidate in sorted(known):
        if upper == candidate:
            return candidate  # the right name in the wrong case
        allowed = 1 if len(candidate) <= 6 else 2
        if abs(len(candidate) - len(upper)) > allowed:
            continue
        distance = edit_distance(upper, candidate)
        if distance <= allowed and (best is None or distance < best[0]):
            best = (distance, candidate)
    return None if best is None else best[1]


def edit_distance(a: str, b: str) -> int:
    """Edits (insert, delete, replace, swap two neighbours) that turn ``a`` into ``b``: the
    optimal string alignment distance, so ``MODLE`` is one edit from ``MODEL``."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, char_b in enumerate(b, start=1):
            cost = 0 if char_a == char_b else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


def _dotenv_names(env_file: str | Path | None) -> list[str]:
    """The names a ``.env`` file sets, as pydantic-settings reads it (python-dotenv); none when
    there is no such file."""
    if env_file is None or not Path(env_file).is_file():
        return []
    from dotenv import dotenv_values

    return [name for name in dotenv_values(env_file) if name]
