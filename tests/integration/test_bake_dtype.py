"""The bake keeps each family's weights in their own dtype: ``--dtype auto`` (the default) bakes
SD3 and Flux in bf16 (they overflow in fp16) and SD in fp16; ``bfloat16`` is offered for any."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.stable_diffusion.baking import RECORD_NAME, BakeRequest, bake

pytest.importorskip("torch")


def stored_dtypes(folder: Path) -> set[str]:
    """Every floating-point dtype in the safetensors files under ``folder`` (from headers)."""
    found: set[str] = set()
    for path in folder.rglob("*.safetensors"):
        with path.open("rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(length))
        found |= {entry["dtype"] for name, entry in header.items()
                  if name != "__metadata__" and entry["dtype"].startswith(("F", "BF"))}
    return found


@pytest.mark.timeout(600)
def test_flux_baked_with_the_default_dtype_stays_bf16(
    tiny_family_path: Callable[[str], Path], tmp_path: Path
) -> None:
    result = bake(BakeRequest(model=str(tiny_family_path("flux")), dest=tmp_path / "flux",
                              dtype="auto"))

    assert stored_dtypes(result.dest / "transformer") == {"BF16"}
    assert json.loads((result.dest / RECORD_NAME).read_text())["dtype"] == "bfloat16"


@pytest.mark.timeout(600)
def test_bf16_weights_baked_as_bfloat16_stay_bf16_and_sd_by_default_is_fp16(
    tiny_sd_path: Path, tmp_path: Path
) -> None:
    as_bf16 = bake(BakeRequest(model=str(tiny_sd_path), dest=tmp_path / "bf16",
                               dtype="bfloat16"))
    again = bake(BakeRequest(model=str(as_bf16.dest), dest=tmp_path / "again", dtype="bfloat16"))
    default = bake(BakeRequest(model=str(tiny_sd_path), dest=tmp_path / "fp16", dtype="auto"))

    assert stored_dtypes(as_bf16.dest / "unet") == {"BF16"}
    assert stored_dtypes(again.dest / "unet") == {"BF16"}
    assert stored_dtypes(default.dest / "unet") == {"F16"}
