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

The last two only when the refiner runs (a value that changes nothing is refused, as
``prompt_strength`` without ``init_image`` is). Families other than SDXL refuse all three by
name. Whether a refiner is loaded (``SD_REFINER_PATH``) comes in the validation context, as
``fetch_urls`` does. Pure: no torch, no environment.
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
    """The accepted value of refiner field ``name``, or raise :func:`.field_checks.field_problem`.

    ``data`` holds the fields already accepted (``use_refiner`` comes before the other two)."""
    if spec.family is not Family.SDXL:
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
    refused = "use_refiner" in given and "use_refiner" not in data  # reported on its own
    if not refused and data.get("use_refiner") is not True:
        raise field_problem("only when the refiner runs (use_refiner)")
    if name == "refiner_inference_steps":
        return within_bounds(checked_integer(value), 1, max_steps)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise field_problem(f"must be a number (got {show_value(value)})")
    if not math.isfinite(value) or not 0 < value < 1:
        raise field_problem(f"must be between 0 and 1, both excluded (got {show_value(value)})")
    return float(value)
