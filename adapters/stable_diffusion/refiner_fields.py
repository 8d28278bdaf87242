"""The SDXL refiner's job fields, as :mod:`.schema` checks them.

============================  =================================  ==============================
field                         default                            accepted
============================  =================================  ==============================
``use_refiner``               true for text-to-image jobs when   a boolean; true needs a loaded
                              a refiner is loaded, else false    refiner and no ``init_image``
``refiner_inference_steps``   ``num_inference_steps``            1 to ``max_steps``
``high_noise_frac``           0.8                                a number strictly between 0
                                                                 and 1
============================  =================================  ==============================

The last two are used only when the refiner runs. RunPod's worker-sdxl template sends both
with every job (its ``test_input.json`` does), so when the refiner does not run (no refiner
loaded, ``use_refiner`` false, an image job, a family other than SDXL) they are still checked,
then ignored, and :func:`ignored_note` says so in the job's output, rather than the job being
refused. ``use_refiner`` is a request, not a setting: ``true`` is refused when no refiner can
run, and families other than SDXL refuse it by name. Whether a refiner is loaded
(``SD_REFINER_PATH``) comes in the validation context, as ``fetch_urls`` does. Pure: no torch,
no environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from adapters.stable_diffusion.families import Family, FamilySpec
from adapters.stable_diffusion.field_checks import (
    checked_integer,
    field_problem,
    show_value,
    within_bounds,
)

REFINER_FIELDS = ("use_refiner", "refiner_inference_steps", "high_noise_frac")
DEFAULT_HIGH_NOISE_FRAC = 0.8


def refiner_defaults(spec: FamilySpec, given: Mapping[str, Any], loaded: bool) -> dict[str, Any]:
    """The defaults of the refiner's fields for a job that gave ``given`` (not null)."""
    if spec.family is not Family.SDXL:
        return {}
    use = given.get("use_refiner", loaded and "init_image" not in given)
    defaults: dict[str, Any] = {"use_refiner": use} if loaded else {}
    if use is True:
        defaults["high_noise_frac"] = DEFAULT_HIGH_NOISE_FRAC
    return defaults


def checked_refiner_field(
    name: str, value: Any, *, spec: FamilySpec, given: frozenset[str], loaded: bool,
    data: Mapping[str, Any], max_steps: int,
) -> Any:
    """The accepted value of refiner field ``name`` (None for one ignored because the refiner
    does not run), or raise :func:`.field_checks.field_problem`.

    ``data`` holds the fields already accepted (``use_refiner`` comes before the other two)."""
    if name == "use_refiner" and spec.family is not Family.SDXL:
        raise field_problem(f"not supported by {spec.label} pipelines (only SDXL has a refiner)")
    if name == "use_refiner":
        if not isinstance(value, bool):
            raise field_problem(f"must be true or false (got {show_value(value)})")
        if value and not loaded:
            raise field_problem("this worker has no refiner loaded (SD_REFINER_PATH is not set)")
        if value and "init_image" in given:
            raise field_problem("the refiner runs for text-to-image jobs only (not with "
                                "init_image)")
        return value
    if name == "refiner_inference_steps":
        steps = within_bounds(checked_integer(value), 1, max_steps)
        return steps if data.get("use_refiner") is True else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise field_problem(f"must be a number (got {show_value(value)})")
    if not math.isfinite(value) or not 0 < value < 1:
        raise field_problem(f"must be between 0 and 1, both excluded (got {show_value(value)})")
    return float(value) if data.get("use_refiner") is True else None


def ignored_note(
    spec: FamilySpec, given: frozenset[str], loaded: bool, used: Mapping[str, Any]
) -> str | None:
    """The note for the job's output when it sent refiner settings that were ignored, saying
    why; None when it sent none, or they are used. ``used`` holds the accepted values."""
    ignored = [name for name in REFINER_FIELDS[1:] if name in given and used.get(name) is None]
    if not ignored:
        return None
    if spec.family is not Family.SDXL:
        why = f"only SDXL has a refiner, and this worker runs {spec.label}"
    elif not loaded:
        why = "this worker has no refiner loaded (SD_REFINER_PATH is not set)"
    elif "init_image" in given:
        why = "the refiner runs for text-to-image jobs only"
    else:
        why = "use_refiner is false"
    return f"{', '.join(ignored)}: ignored: {why}"
