"""The GPU benchmark's full-size architectures have their published sizes (counted on torch's
meta device: no memory, no weights)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.architectures import flux_schnell_parts, parameter_counts, sdxl_parts

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")


def millions(parts: dict[str, object]) -> dict[str, int]:
    return {name: round(count / 1e6) for name, count in parameter_counts(parts).items()}


def test_sdxl_has_sdxl_base_sizes(tmp_path: Path) -> None:
    from adapters.stable_diffusion.tiny.parts import make_clip_tokenizer

    with torch.device("meta"):
        parts = sdxl_parts(make_clip_tokenizer(tmp_path / "tokenizer"))

    sizes = millions(parts)
    assert sizes["unet"] == pytest.approx(2567, abs=5)
    assert sizes["text_encoder"] == pytest.approx(123, abs=2)
    assert sizes["text_encoder_2"] == pytest.approx(695, abs=5)
    assert sizes["vae"] == pytest.approx(84, abs=2)


def test_flux_schnell_has_flux_sizes(tmp_path: Path) -> None:
    from adapters.stable_diffusion.tiny.parts import make_clip_tokenizer, make_t5_tokenizer

    with torch.device("meta"):
        parts = flux_schnell_parts(make_clip_tokenizer(tmp_path / "tokenizer"),
                                   make_t5_tokenizer())

    sizes = millions(parts)
    assert sizes["transformer"] == pytest.approx(11902, abs=20)
    assert sizes["text_encoder_2"] == pytest.approx(4762, abs=10)
    assert sizes["vae"] == pytest.approx(84, abs=2)
