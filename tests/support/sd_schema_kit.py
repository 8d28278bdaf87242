"""Helpers for the SD 1.x input tests (tests/unit/test_sd_schema*.py): the live schema
(:mod:`adapters.stable_diffusion.schema`) with the ``sd`` family's spec."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.stable_diffusion.families import Family, family_spec
from adapters.stable_diffusion.limits import SdLimits
from adapters.stable_diffusion.schema import FamilyInput, field_names, parse_family_input
from domain.errors import InvalidInput

SD = family_spec(Family.SD.value)
FIELD_NAMES = field_names(SD)


def parse_sd(raw: Any, limits: SdLimits | None = None) -> FamilyInput:
    return parse_family_input(raw, SD, limits)


def problems(raw: dict[str, Any], limits: SdLimits | None = None) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_sd(raw, limits)
    return str(caught.value)
