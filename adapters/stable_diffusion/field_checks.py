"""Checks and messages of the input schema (:mod:`.schema`, :mod:`.refiner_fields`).

Each check returns the accepted value or raises :func:`field_problem`'s error, whose message
pydantic reports under the field's name: ``must be an integer (got '512')``. Values are shown by
:func:`show_value`, short and JSON-flavoured, never a whole prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

MAX_REPORTED_PROBLEMS = 12  # a message stays readable even for an input full of junk keys


def field_problem(message: str) -> PydanticCustomError:
    # The message goes in the context: user text with braces must not be read as a template.
    return PydanticCustomError("sd_input", "{message}", {"message": message})


def whole_problem(message: str) -> PydanticCustomError:
    """An error reported as ``message`` alone, not under the field's name: for a field whose
    message names its own parts (``loras[1].scale: ...; loras[2]: ...``)."""
    return PydanticCustomError("sd_whole", "{message}", {"message": message})


def checked_text(value: Any, max_chars: int) -> str:
    if not isinstance(value, str):
        raise field_problem(f"must be a string (got {show_value(value)})")
    if len(value) > max_chars:
        raise field_problem(f"must be at most {max_chars} characters (got {len(value)})")
    return value


def checked_integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise field_problem(f"must be an integer (got {show_value(value)})")
    if isinstance(value, float):
        if not value.is_integer():
            raise field_problem(f"must be an integer (got {show_value(value)})")
        return int(value)
    return value


def within_bounds(value: int, low: int, high: int) -> int:
    if value < low:
        raise field_problem(f"must be at least {low} (got {show_value(value)})")
    if value > high:
        raise field_problem(f"must be at most {high} (got {show_value(value)})")
    return value


def describe_problems(
    exc: ValidationError,
    field_names: Sequence[str],
    extra_field: Callable[[str], tuple[str, bool]],
    sent_as: Mapping[str, str] | None = None,
) -> str:
    """``invalid input: <field>: <problem>; <field>: <problem>; ...`` for every problem.

    ``field_names`` (listed when a key is unknown) and ``extra_field`` (the message for a key the
    schema does not take, and whether it is simply unknown) are the schema's own; ``sent_as``
    names a field by the name the job sent it under (a template's ``image_url``).
    """
    explain = extra_field
    problems: list[str] = []
    unknown = False
    for err in exc.errors(include_url=False):
        field = ".".join(show_key(part) for part in err["loc"]) or "input"
        field = (sent_as or {}).get(field, field)
        kind = err["type"]
        if kind in ("sd_pixels", "sd_whole"):
            problems.append(str(err["msg"]))
        elif kind == "missing":
            problems.append(f"{field}: is required")
        elif kind == "extra_forbidden":
            message, is_unknown = explain(str(err["loc"][0]) if err["loc"] else field)
            unknown = unknown or is_unknown
            problems.append(f"{field}: {message}")
        else:
            problems.append(f"{field}: {err['msg']}")
    if len(problems) > MAX_REPORTED_PROBLEMS:
        hidden = len(problems) - MAX_REPORTED_PROBLEMS
        problems = [*problems[:MAX_REPORTED_PROBLEMS], f"and {hidden} more"]
    if unknown:
        problems.append(f"known fields: {', '.join(field_names)}")
    return "invalid input: " + "; ".join(problems)


def show_value(value: Any) -> str:
    """A short JSON-flavoured picture of a value, for messages (never a whole prompt)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    text = repr(value)
    if len(text) <= 40:
        return text
    return text[:36] + ("...'" if isinstance(value, str) else "...")


def show_key(key: object) -> str:
    text = str(key)
    if text.isprintable() and len(text) <= 40:
        return text
    return repr(text)[:40]
