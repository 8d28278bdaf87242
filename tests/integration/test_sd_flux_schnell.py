"""Flux schnell through the real adapter: its own defaults, on a tiny schnell pipeline.

The tiny pipeline (``make_tiny_model(..., family="flux-schnell")``, tests/support/tiny_sd.py) is
a ``FluxPipeline`` whose transformer embeds no guidance, as FLUX.1-schnell's. The model reads
that from the weights and gives a job that leaves the steps and the guidance out schnell's
defaults: 4 steps and guidance 0.0. A guidance a job sends is accepted and changes nothing.
Its prompt is encoded to 256 T5 tokens (dev's to 512). With downloads allowed, a hub id not in
the cache is told schnell from its downloaded transformer config (the hub is faked here by a
function serving the tiny folders' files: no network).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion import pipelines
from adapters.stable_diffusion.families import FLUX_SCHNELL, SPECS, Family
from adapters.stable_diffusion.job_images import JobImages
from adapters.stable_diffusion.limits import SdLimits
from adapters.stable_diffusion.model import StableDiffusionModel
from adapters.stable_diffusion.schema import parse_family_input
from tests.support.sd_jobs import StepContext, decode

pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

SMALL: dict[str, Any] = {"prompt": "a lighthouse on a cliff", "width": 64, "height": 64}


@pytest.fixture
def model(tiny_family_model: Callable[[str], StableDiffusionModel]) -> StableDiffusionModel:
    return tiny_family_model("flux-schnell")


def pngs(result: Any) -> list[bytes]:
    return [bytes(item["image"].data) for item in result]


def test_the_model_reads_flux_schnell_from_the_weights(model: StableDiffusionModel) -> None:
    assert model.spec == FLUX_SCHNELL
    assert model.pipeline.transformer.config.guidance_embeds is False


def test_a_job_with_only_a_prompt_runs_schnells_four_steps_at_its_default_size(
    model: StableDiffusionModel,
) -> None:
    ctx = StepContext()

    result = model.run({"prompt": "a lighthouse on a cliff", "seed": 5}, ctx)

    assert ctx.updates == [{"step": k, "of": 4} for k in (1, 2, 3, 4)]
    with decode(result[0]["image"]) as image:
        assert (image.format, image.size) == ("PNG", (1024, 1024))


def test_schnells_defaults_give_byte_identical_pngs_for_a_seed_and_others_for_another(
    model: StableDiffusionModel,
) -> None:
    first = model.run({**SMALL, "seed": 7}, StepContext())
    again = model.run({**SMALL, "seed": 7}, StepContext())
    other = model.run({**SMALL, "seed": 8}, StepContext())

    assert pngs(first) == pngs(again)
    assert pngs(first) != pngs(other)


def test_a_guidance_scale_sent_to_schnell_is_accepted_and_changes_nothing(
    model: StableDiffusionModel,
) -> None:
    default = model.run({**SMALL, "seed": 3}, StepContext())
    ctx = StepContext()
    guided = model.run({**SMALL, "seed": 3, "guidance_scale": 7.5}, ctx)

    assert len(ctx.updates) == 4
    assert pngs(guided) == pngs(default)


# --- T5 prompt length ------------------------------------------------------------------------


def arguments_for(model: StableDiffusionModel, pipe: Any, task: str) -> dict[str, Any]:
    assert model.spec is not None
    params = parse_family_input({"prompt": "a lighthouse"}, model.spec)
    return pipelines.call_arguments(pipe, model.spec, params, JobImages(task, 64, 64),
                                    generators=[None], on_step=None)


@pytest.mark.parametrize(("family", "tokens"), [("flux-schnell", 256), ("flux", 512)])
def test_every_task_of_a_flux_pipeline_is_called_with_its_variants_t5_prompt_length(
    family: str, tokens: int, tiny_family_model: Callable[[str], StableDiffusionModel]
) -> None:
    model = tiny_family_model(family)
    assert model.spec is not None
    variants, _ = pipelines.make_variants(diffusers, model.spec, model.pipeline)

    assert sorted(variants) == ["img2img", "inpaint", "text2img"]
    for task, pipe in variants.items():
        assert arguments_for(model, pipe, task)["max_sequence_length"] == tokens, task


def test_a_family_without_a_t5_prompt_length_is_called_without_one(
    tiny_family_model: Callable[[str], StableDiffusionModel],
) -> None:
    sd3 = tiny_family_model("sd3")  # takes one, and keeps its pipeline's own
    sd = tiny_family_model("sd")  # takes none

    assert "max_sequence_length" not in arguments_for(sd3, sd3.pipeline, "text2img")
    assert "max_sequence_length" not in arguments_for(sd, sd.pipeline, "text2img")


def test_a_schnell_job_encodes_its_prompt_to_256_t5_tokens_and_still_makes_its_image(
    model: StableDiffusionModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[tuple[Any, int]] = []
    encode_prompt = diffusers.FluxPipeline.encode_prompt

    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        embeds = encode_prompt(self, *args, **kwargs)
        encoded.append((kwargs.get("max_sequence_length"), embeds[0].shape[1]))
        return embeds

    monkeypatch.setattr(diffusers.FluxPipeline, "encode_prompt", recording)
    ctx = StepContext()

    result = model.run({**SMALL, "seed": 4}, ctx)

    assert encoded == [(256, 256)]
    assert len(ctx.updates) == 4
    with decode(result[0]["image"]) as image:
        assert (image.format, image.size) == ("PNG", (64, 64))


# --- a hub id downloaded -----------------------------------------------------------------------


class FakeHub:
    """``hf_hub_download`` serving the files of local folders as hub ids: each file is copied
    into a snapshot folder of its own, as the hub's cache does, and every request recorded."""

    def __init__(self, cache: Path, repos: dict[str, Path], refuse: str | None = None) -> None:
        self.cache, self.repos, self.refuse = cache, repos, refuse
        self.requested: list[tuple[str, str]] = []

    def __call__(self, repo_id: str, filename: str, **_: Any) -> str:
        self.requested.append((repo_id, filename))
        if filename == self.refuse:
            raise ConnectionError("the hub could not be reached")
        source = self.repos[repo_id] / filename
        if not source.is_file():
            raise FileNotFoundError(f"{repo_id} has no {filename}")
        target = self.cache / repo_id.replace("/", "--") / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return str(target)


@pytest.fixture
def hub(
    tmp_path: Path, tiny_family_path: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> FakeHub:
    import huggingface_hub

    fake = FakeHub(tmp_path, {"someone/schnell": tiny_family_path("flux-schnell"),
                              "someone/dev": tiny_family_path("flux"),
                              "someone/sd": tiny_family_path("sd")})
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url: None)  # reachable
    return fake


def test_a_downloaded_hub_id_of_schnell_is_told_from_its_downloaded_transformer_config(
    hub: FakeHub,
) -> None:
    def detected(repo_id: str) -> Any:
        return pipelines.checked_family(None, repo_id, SdLimits(), allow_download=True)

    assert detected("someone/schnell") == FLUX_SCHNELL
    assert detected("someone/dev") == SPECS[Family.FLUX]
    assert detected("someone/sd") == SPECS[Family.SD]  # no transformer: its miss is ignored
    assert hub.requested == [(repo, name) for repo in ("someone/schnell", "someone/dev",
                                                       "someone/sd")
                             for name in ("model_index.json", "transformer/config.json")]


def test_a_schnell_transformer_config_that_cannot_be_downloaded_leaves_flux_dev(
    hub: FakeHub,
) -> None:
    hub.refuse = "transformer/config.json"

    spec = pipelines.checked_family(None, "someone/schnell", SdLimits(), allow_download=True)

    assert spec == SPECS[Family.FLUX]
    assert hub.requested[-1] == ("someone/schnell", "transformer/config.json")
