"""Every pipeline family through the real adapter (``StableDiffusionModel``), on tiny pipelines.

Each family's tiny pipeline (tests/support/tiny_sd.py; Flux dev and Flux schnell both) is
loaded once per session by the model itself, its family read from ``model_index.json`` (and
schnell from its transformer config); jobs are 64x64 with 3 to 5 steps, seconds on a CPU.
Per family: the family's own pipeline class is used, a fixed seed gives byte-identical PNGs,
several bad fields get one error naming them all, and a cancel check raising part-way stops the
job at a denoising step with the denoiser run no further.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from adapters.stable_diffusion.model import StableDiffusionModel
from domain.errors import ExecutionTimeout, InvalidInput, JobCancelled
from tests.support.sd_jobs import StepContext, decode

pytest.importorskip("torch")
pytest.importorskip("diffusers")

SMALL: dict[str, Any] = {"prompt": "a lighthouse on a cliff", "width": 64, "height": 64,
                         "num_inference_steps": 3}
PIPELINES = {"sd": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline",
             "sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline",
             "flux-schnell": "FluxPipeline"}


@pytest.fixture(scope="module", params=sorted(PIPELINES))
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def model(family: str, tiny_family_model: Callable[[str], StableDiffusionModel]) -> Any:
    return tiny_family_model(family)


@pytest.fixture
def denoiser_calls(model: StableDiffusionModel) -> Iterator[list[int]]:
    """How many times the UNet or transformer ran."""
    pipe = model.pipeline
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    calls: list[int] = []
    handle = denoiser.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


def test_each_family_runs_its_own_pipeline_class(family: str, model: StableDiffusionModel) -> None:
    assert model.spec is not None
    assert model.spec.name == family
    assert type(model.pipeline).__name__ == PIPELINES[family]


def test_each_family_makes_byte_identical_pngs_for_a_seed_and_others_for_another_seed(
    model: StableDiffusionModel,
) -> None:
    first = model.run({**SMALL, "seed": 7, "num_outputs": 2}, StepContext())
    again = model.run({**SMALL, "seed": 7, "num_outputs": 2}, StepContext())
    other = model.run({**SMALL, "seed": 9}, StepContext())

    assert [item["seed"] for item in first] == [7, 8]
    assert [item["image"].data for item in first] == [item["image"].data for item in again]
    assert first[0]["image"].data != first[1]["image"].data
    assert other[0]["image"].data not in [item["image"].data for item in first]
    with decode(first[0]["image"]) as image:
        assert (image.format, image.size) == ("PNG", (64, 64))


def test_each_family_reports_every_step_as_progress(model: StableDiffusionModel) -> None:
    ctx = StepContext()
    model.run({**SMALL, "seed": 1}, ctx)
    assert ctx.updates == [{"step": k, "of": 3} for k in (1, 2, 3)]


def test_each_family_refuses_several_bad_fields_in_one_error_before_any_denoising(
    family: str, model: StableDiffusionModel, denoiser_calls: list[int]
) -> None:
    bad: dict[str, Any] = {"prompt": "", "width": 100, "num_outputs": 9, "seed": -1}
    if family.startswith("flux"):
        bad["negative_prompt"] = "blurry"  # Flux takes no negative prompt
    if family in ("sd3", "flux", "flux-schnell"):
        bad["scheduler"] = "DDIM"  # their own flow-match scheduler only

    with pytest.raises(InvalidInput) as caught:
        model.run(bad, StepContext())

    message = str(caught.value)
    assert message.startswith("invalid input: ") and "\n" not in message
    for field in bad:
        assert f"{field}: " in message, (field, message)
    multiple = 16 if family.startswith("flux") else 8
    assert f"width: must be a multiple of {multiple} (got 100)" in message
    assert denoiser_calls == []


@pytest.mark.parametrize("error", [ExecutionTimeout(1000), JobCancelled("stopped by the API")],
                         ids=["timeout", "job stop"])
def test_each_family_stops_at_the_denoising_step_where_the_cancel_check_raises(
    model: StableDiffusionModel, denoiser_calls: list[int], error: Exception
) -> None:
    ctx = StepContext(stop_after_step=2, error=error)

    with pytest.raises(type(error)):
        model.run({**SMALL, "num_inference_steps": 5, "seed": 3}, ctx)

    assert ctx.updates == [{"step": 1, "of": 5}, {"step": 2, "of": 5}]
    assert len(denoiser_calls) == 3  # the third step ran, its end check stopped the job


def test_after_a_cancel_the_next_job_of_each_family_runs_and_matches(
    model: StableDiffusionModel,
) -> None:
    job = {**SMALL, "seed": 11}
    before = model.run(job, StepContext())
    with pytest.raises(ExecutionTimeout):
        model.run(job, StepContext(stop_after_step=1))
    after = model.run(job, StepContext())
    assert after[0]["image"].data == before[0]["image"].data


def test_each_family_refuses_an_init_image_url_while_url_fetching_is_off(
    model: StableDiffusionModel, denoiser_calls: list[int]
) -> None:
    job = {**SMALL, "init_image": "http://127.0.0.1:9/cat.png"}

    with pytest.raises(InvalidInput, match="init_image: URLs are not fetched by this worker "
                       r"\(INPUT_URL_FETCH is off\)"):
        model.run(job, StepContext())
    assert denoiser_calls == []
