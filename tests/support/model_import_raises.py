"""A model module whose import itself fails (it reads its weights at import time, as some do):
``MODEL=tests.support.model_import_raises:build`` is a failed start in phase ``import``."""

from __future__ import annotations

from typing import Any

IMPORT_ERROR = "weights.safetensors is truncated (raised while the module was imported)"

raise OSError(IMPORT_ERROR)


def build(settings: Any) -> Any:  # never reached
    return None
