"""A helper for the SD 1.x input schema's tests (tests/unit/test_sd_schema*.py)."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.stable_diffusion.schema import SdLimits, parse_input
from domain.errors import InvalidInput


def problems(raw: dict[str, Any], limits: SdLimits | None = None) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_input(raw, limits)
    return str(caught.value)
