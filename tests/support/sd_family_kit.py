"""Helpers for the pipeline families' tests (tests/unit/test_sd_famil*.py): a family's spec by
name (``flux-schnell`` too), every family's name, a tiny PNG in base64, and the one-line message
an input is refused with.
"""

from __future__ import annotations

from typing import Any

import pytest

from adapters.stable_diffusion.families import FLUX_SCHNELL, Family, FamilySpec, family_spec
from adapters.stable_diffusion.schema import parse_family_input
from domain.errors import InvalidInput

ALL = [*(f.value for f in Family), FLUX_SCHNELL.name]
PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5Er"
           "kJggg==")


def spec(name: str) -> FamilySpec:
    return FLUX_SCHNELL if name == FLUX_SCHNELL.name else family_spec(name)


def problems(raw: Any, family: str, **options: Any) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_family_input(raw, spec(family), **options)
    return str(caught.value)
