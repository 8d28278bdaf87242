"""SDXL's refiner on real tiny pipelines (CPU): the tiny SDXL base and the tiny refiner
(``make-tiny-model --family sdxl-refiner``), loaded by ``StableDiffusionModel`` as real weights.

Step counts are worked out by hand from diffusers' filtering of SDXL's Euler schedule
("leading", offset 1): 5 steps are timesteps 801, 601, 401, 201, 1 and 10 steps are 901, 801,
..., 1; with ``high_noise_frac`` 0.8 the cutoff is 200, so the base runs 4 of 5 steps (those at
or above it) and the refiner 1 of 5 or 2 of 10 (those below it). That one last step changes
the tiny pipeline's image by a level or so: jobs compared by their pixels refine from
``high_noise_frac`` 0.5 (cutoff 500: the base runs 801 and 601, the refiner 401, 201 and 1).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion.batches import Work, batch_key
from adapters.stable_diffusion.families import SPECS, Family
from adapters.stable_diffusion.model import StableDiffusionModel
from app.sd_wiring import build_stable_diffusion
from app.settings import load_settings
from domain.errors import ConfigurationError, ExecutionTimeout, InvalidInput, ModelError
from domain.job import Artifact
from tests.support.sd_batch_kit import pixels, run_together
from tests.support.sd_jobs import StepContext, decode

pytest.importorskip("torch")

JOB: dict[str, Any] = {"prompt": "a photo of a cat", "width": 64, "height": 64,
                       "num_inference_steps": 5, "seed": 3}
HALF: dict[str, Any] = {**JOB, "high_noise_frac": 0.5}


def far_apart(first: Any, second: Any) -> bool:
    """Most pixels differ by more than batch rounding could make them."""
    import numpy as np

    return bool((np.abs(first - second) > 2).mean() > 0.3)


@pytest.fixture(scope="module")
def model(tiny_family_path: Callable[[str], Path]) -> StableDiffusionModel:
    loaded = StableDiffusionModel(
        str(tiny_family_path("sdxl")), device="cpu", batch_max=8, batch_wait_s=0.0,
        refiner_path=str(tiny_family_path("sdxl-refiner")),
    )
    loaded.load()
    return loaded


def png(model: StableDiffusionModel, job: dict[str, Any], ctx: StepContext | None = None) -> bytes:
    output = model.run(job, ctx or StepContext())
    assert len(output) == 1
    return bytes(output[0]["image"].data)


def test_a_refined_job_writes_a_png_unlike_the_same_seed_unrefined(
    model: StableDiffusionModel,
) -> None:
    refined = png(model, HALF)  # use_refiner defaults to true with a refiner loaded
    explicit = png(model, {**HALF, "use_refiner": True})
    unrefined = png(model, {**JOB, "use_refiner": False})

    assert refined.startswith(b"\x89PNG") and decode_size(refined) == (64, 64)
    assert refined == explicit
    assert far_apart(as_pixels(refined), as_pixels(unrefined))


def decode_size(data: bytes) -> tuple[int, int]:
    width, height = decode(Artifact(data)).size
    return (width, height)


def as_pixels(data: bytes) -> Any:
    import numpy as np

    return np.asarray(decode(Artifact(data)), dtype=np.int16)


def test_a_refined_job_is_the_same_for_the_same_seed_and_another_for_another(
    model: StableDiffusionModel,
) -> None:
    first, again = png(model, JOB), png(model, JOB)
    other = png(model, {**JOB, "seed": 4})

    assert first == again
    assert first != other


def test_other_refiner_settings_make_another_image(model: StableDiffusionModel) -> None:
    base = png(model, JOB)

    assert png(model, {**JOB, "high_noise_frac": 0.5}) != base
    assert png(model, {**JOB, "refiner_inference_steps": 10}) != base


def test_progress_counts_both_stages_steps_and_ends_at_their_sum(
    model: StableDiffusionModel,
) -> None:
    five, ten = StepContext(), StepContext()

    png(model, JOB, five)
    png(model, {**JOB, "refiner_inference_steps": 10}, ten)

    assert five.updates == [{"step": k, "of": 5} for k in range(1, 6)]  # base 4, refiner 1
    assert ten.updates == [{"step": k, "of": 6} for k in range(1, 7)]  # base 4, refiner 2


@pytest.mark.parametrize("scheduler", ["HEUN", "DPM++", "EULER-A", "DDIM"])
def test_progress_rises_strictly_to_its_total_with_any_scheduler(
    model: StableDiffusionModel, scheduler: str
) -> None:
    ctx = StepContext()

    png(model, {**JOB, "num_inference_steps": 7, "refiner_inference_steps": 9,
                "high_noise_frac": 0.6, "scheduler": scheduler}, ctx)

    steps = [update["step"] for update in ctx.updates]
    total = ctx.updates[-1]["of"]
    assert {update["of"] for update in ctx.updates} == {total}
    assert steps == sorted(set(steps)) and steps[-1] == total
    assert total >= 2  # both stages ran at least one step


def test_a_job_stopped_in_the_refiner_stage_leaves_with_its_error(
    model: StableDiffusionModel,
) -> None:
    ctx = StepContext(stop_after_step=5, error=ExecutionTimeout(1000))

    with pytest.raises(ExecutionTimeout):
        model.run({**JOB, "refiner_inference_steps": 10}, ctx)

    # the base reports steps 1..4: step 5 came from the refiner, stopped before step 6
    assert ctx.updates == [{"step": k, "of": 6} for k in range(1, 6)]


def test_bad_refiner_fields_are_reported_together_before_any_work(
    model: StableDiffusionModel,
) -> None:
    ctx = StepContext()

    with pytest.raises(InvalidInput) as raised:
        model.run({**JOB, "use_refiner": 1, "refiner_inference_steps": -1,
                   "high_noise_frac": 2.0}, ctx)

    assert str(raised.value) == (
        "invalid input: use_refiner: must be true or false (got 1); refiner_inference_steps: "
        "must be at least 1 (got -1); high_noise_frac: must be between 0 and 1, both excluded "
        "(got 2.0)")
    assert ctx.updates == []


def test_a_base_that_would_run_no_step_is_refused_naming_its_field(
    model: StableDiffusionModel,
) -> None:
    ctx = StepContext()

    # 1 step is timestep 1, below the cutoff: the base would hand pure noise to the refiner
    with pytest.raises(InvalidInput, match=r"^invalid input: num_inference_steps: with "
                       r"high_noise_frac 0\.8 the base runs no step of 1; ask for more$"):
        model.run({**JOB, "num_inference_steps": 1}, ctx)
    assert ctx.updates == []
    assert len(model.run({**JOB, "num_inference_steps": 2}, ctx)) == 1  # 501 is above it


def test_the_refiner_shares_the_bases_vae_and_second_text_encoder(
    model: StableDiffusionModel,
) -> None:
    assert model.refiner is not None
    refiner = model.refiner.pipe

    assert type(refiner).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert refiner.vae is model.pipeline.vae
    assert refiner.text_encoder_2 is model.pipeline.text_encoder_2
    assert refiner.unet is not model.pipeline.unet
    assert refiner.dtype == model.pipeline.dtype


def test_batches_never_mix_refined_and_unrefined_jobs(model: StableDiffusionModel) -> None:
    jobs = {"refined": {**HALF, "seed": 1}, "refined-too": {**HALF, "prompt": "a dog", "seed": 2},
            "unrefined": {**JOB, "seed": 1, "use_refiner": False},
            "longer": {**HALF, "seed": 1, "refiner_inference_steps": 10}}
    alone = {name: pixels(model.run(job, StepContext())) for name, job in jobs.items()}
    before = dict(model.device_queue.batch_sizes)

    answers = run_together(model, jobs)

    after = model.device_queue.batch_sizes
    calls = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    # the two refined jobs alike share a call; the unrefined one and the longer one run alone
    assert {size: n for size, n in calls.items() if n} == {2: 1, 1: 2}
    import numpy as np

    for name in jobs:
        difference = np.abs(pixels(answers[name])[0] - alone[name][0])
        assert difference.max() <= 2, name  # the image it gets alone, up to batch rounding
    # ... while an unrefined job in the refined call would be far from it
    assert far_apart(alone["refined"][0], alone["unrefined"][0])


def test_the_batch_key_tells_refiner_settings_apart(model: StableDiffusionModel) -> None:
    from adapters.stable_diffusion.job_images import JobImages
    from adapters.stable_diffusion.schema import parse_family_input

    def key(**fields: Any) -> Any:
        params = parse_family_input({**JOB, **fields}, SPECS[Family.SDXL], refiner=True)
        return batch_key(Work(params, JobImages("text2img", 64, 64), [1], (4, 1)))

    assert key() == key(use_refiner=True, high_noise_frac=0.8, refiner_inference_steps=5)
    assert len({key(), key(use_refiner=False), key(high_noise_frac=0.7),
                key(refiner_inference_steps=6)}) == 4


def test_a_missing_or_wrong_refiner_folder_fails_the_load_naming_it(
    tiny_family_path: Callable[[str], Path], tmp_path: Path,
) -> None:
    base = str(tiny_family_path("sdxl"))
    missing = StableDiffusionModel(base, device="cpu", refiner_path=str(tmp_path / "nowhere"))
    not_a_refiner = StableDiffusionModel(base, device="cpu", refiner_path=base)

    with pytest.raises(ModelError, match=r"SD_REFINER_PATH: .*nowhere.* not found"):
        missing.load()
    with pytest.raises(ModelError, match=r"holds a 'StableDiffusionXLPipeline' pipeline, not an "
                       r"SDXL refiner"):
        not_a_refiner.load()
    with pytest.raises(ModelError, match="not loaded"):
        missing.pipeline  # noqa: B018 - nothing half-loaded is kept


def test_a_refiner_with_a_base_of_another_family_is_refused(
    tiny_family_path: Callable[[str], Path],
) -> None:
    refiner = str(tiny_family_path("sdxl-refiner"))

    def build(family: str, **settings: Any) -> Any:
        return build_stable_diffusion(load_settings(
            env_file=None, MODEL_PATH=str(tiny_family_path(family)),
            WEBHOOK_GET_WORK="http://api.invalid/take", **{"SD_REFINER_PATH": refiner, **settings}))

    with pytest.raises(ConfigurationError, match=r"SD_REFINER_PATH: the refiner .* finishes SDXL "
                       r"images only, and the base model is Stable Diffusion 3"):
        build("sd3")
    with pytest.raises(ConfigurationError, match=r"base model is Stable Diffusion 1\.x/2\.x"):
        build("sdxl", SD_PIPELINE="sd")
    assert build("sdxl").refiner_path == refiner
    assert build("sd3", SD_REFINER_PATH=" ").refiner_path is None  # blank is unset
    with pytest.raises(ModelError, match="the refiner works with an SDXL base only"):
        StableDiffusionModel(str(tiny_family_path("flux")), device="cpu",
                             refiner_path=refiner).load()


def test_without_a_refiner_use_refiner_true_is_refused_and_false_runs(
    tiny_family_model: Callable[[str], StableDiffusionModel],
) -> None:
    plain = tiny_family_model("sdxl")

    with pytest.raises(InvalidInput, match=r"SD_REFINER_PATH is not set"):
        plain.run({**JOB, "use_refiner": True}, StepContext())
    assert len(plain.run({**JOB, "use_refiner": False}, StepContext())) == 1
    for family in ("sd", "sd3", "flux"):
        with pytest.raises(InvalidInput, match=r"use_refiner: not supported by .* pipelines"):
            tiny_family_model(family).run({**JOB, "use_refiner": False}, StepContext())
