"""The tiny Stable Diffusion pipeline, built once per test session, and a model loaded from it.

``tiny_sd_path`` (session) is a folder made by ``make_tiny_model`` under pytest's temporary
directory: random weights, no network, about 4 MB. ``tiny_sd_model`` (session) is a
``StableDiffusionModel`` loaded from it on the CPU, through the same ``from_pretrained`` path
as real weights. Tests that need torch skip when the ``sd`` extra is not installed. Nothing is
imported from torch or diffusers until a test asks for one of these fixtures.

``tiny_family_path`` (session) does the same for any family: call it with ``"sdxl"``,
``"sd3"``, ``"flux"``, ``"flux-schnell"`` (or ``"sd"``, the same folder as ``tiny_sd_path``);
each family is built at most once per session.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from adapters.stable_diffusion.model import StableDiffusionModel


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from adapters.stable_diffusion.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-sd") / "pipeline")


@pytest.fixture(scope="session")
def tiny_sd_model(tiny_sd_path: Path) -> StableDiffusionModel:
    from adapters.stable_diffusion.model import StableDiffusionModel

    model = StableDiffusionModel(str(tiny_sd_path), device="cpu")
    model.load()
    return model


@pytest.fixture(scope="session")
def tiny_family_path(
    tmp_path_factory: pytest.TempPathFactory, tiny_sd_path: Path
) -> Callable[[str], Path]:
    from adapters.stable_diffusion.tiny import make_tiny_model

    built: dict[str, Path] = {"sd": tiny_sd_path}

    def path_of(family: str) -> Path:
        if family not in built:
            folder = tmp_path_factory.mktemp(f"tiny-{family}") / "pipeline"
            built[family] = make_tiny_model(folder, family=family)
        return built[family]

    return path_of


@pytest.fixture(scope="session")
def tiny_family_model(
    tiny_family_path: Callable[[str], Path], tiny_sd_model: StableDiffusionModel
) -> Callable[[str], StableDiffusionModel]:
    """A ``StableDiffusionModel`` loaded on the CPU from the tiny pipeline of a family (its
    family read from the weights), at most once per session; ``"sd"`` is ``tiny_sd_model``."""
    from adapters.stable_diffusion.model import StableDiffusionModel

    loaded: dict[str, StableDiffusionModel] = {"sd": tiny_sd_model}

    def model_of(family: str) -> StableDiffusionModel:
        if family not in loaded:
            model = StableDiffusionModel(str(tiny_family_path(family)), device="cpu")
            model.load()
            loaded[family] = model
        return loaded[family]

    return model_of
