"""Dynamic batching on real tiny pipelines (CPU): jobs of one key share a pipeline call, and each
gets the images it would get alone, its own progress, its own cancel and its own result.

"The images it would get alone" is up to float rounding: PyTorch does not promise bitwise-equal
results across batch sizes. Each comparison also checks that another job's image is far from
it, so the tolerance could not hide a job given the wrong seed, prompt or input image.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.stable_diffusion.model import StableDiffusionModel
from domain.errors import JobCancelled
from tests.support.harness import make_harness
from tests.support.sd_batch_kit import DEADLINE, assert_same_images, pixels, run_together
from tests.support.sd_jobs import StepContext, box_mask, data_url, decode, noise_image

SMALL: dict[str, Any] = {"width": 64, "height": 64, "num_inference_steps": 3}


def load(path: Path, **options: Any) -> StableDiffusionModel:
    model = StableDiffusionModel(str(path), device="cpu", batch_wait_s=0.0, **options)
    model.load()
    return model


def alone(model: StableDiffusionModel, jobs: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    return {name: pixels(model.run(job, StepContext())) for name, job in jobs.items()}


THREE_JOBS: dict[str, dict[str, Any]] = {
    "cat": {"prompt": "a cat", "seed": 1, **SMALL},
    "dog": {"prompt": "a dog on a hill at dusk", "seed": 2, "num_outputs": 2, **SMALL},
    "boat": {"prompt": "a boat", "seed": 3, **SMALL},
}


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux", "flux-schnell"])
def test_batched_jobs_get_the_images_they_get_alone(
    family: str, tiny_family_path: Callable[[str], Path]
) -> None:
    model = load(tiny_family_path(family), batch_max=8)
    jobs = THREE_JOBS
    if family in ("sd", "sdxl", "sd3"):  # a negative prompt each, per row
        jobs = {name: {**job, "negative_prompt": f"not {name}"} for name, job in jobs.items()}
    expected = alone(model, jobs)
    assert model.device_queue.batch_sizes == {1: 3}

    answers = run_together(model, jobs)

    assert model.device_queue.batch_sizes == {1: 3, 3: 1}
    for name, other in [("cat", "boat"), ("dog", "cat"), ("boat", "cat")]:
        first, count = int(jobs[name]["seed"]), int(jobs[name].get("num_outputs", 1))
        assert [item["seed"] for item in answers[name]] == [first + i for i in range(count)]
        assert_same_images(pixels(answers[name]), expected[name], expected[other][0])


def test_each_member_reports_its_own_progress_and_a_cancelled_one_leaves_at_its_step(
    tiny_sd_path: Path,
) -> None:
    model = load(tiny_sd_path, batch_max=8)
    jobs = {name: {**job, "num_inference_steps": 4} for name, job in THREE_JOBS.items()}
    expected = alone(model, jobs)
    contexts = {"cat": StepContext(), "boat": StepContext(),
                "dog": StepContext(stop_after_step=2, error=JobCancelled("job-stop"))}

    answers = run_together(model, jobs, contexts)

    assert model.device_queue.batch_sizes[3] == 1
    assert isinstance(answers["dog"], JobCancelled)
    assert contexts["dog"].updates == [{"step": 1, "of": 4}, {"step": 2, "of": 4}]
    for name in ("cat", "boat"):
        assert contexts[name].updates == [{"step": k, "of": 4} for k in range(1, 5)]
    assert_same_images(pixels(answers["cat"]), expected["cat"], expected["boat"][0])
    assert_same_images(pixels(answers["boat"]), expected["boat"], expected["cat"][0])


def test_image_to_image_and_inpainting_jobs_batch_each_with_its_own_images(
    tiny_sd_path: Path,
) -> None:
    model = load(tiny_sd_path, batch_max=8)
    # A low strength: the tiny random VAE keeps little of an image through much noise.
    common = {"prompt": "a house", "num_inference_steps": 8, "prompt_strength": 0.3}
    mask = data_url(box_mask((64, 64), (16, 16, 48, 48)))
    jobs = {
        "a": {**common, "seed": 5, "init_image": data_url(noise_image((64, 64), 1))},
        "b": {**common, "seed": 5, "init_image": data_url(noise_image((64, 64), 2))},
        "c": {**common, "seed": 6, "init_image": data_url(noise_image((64, 64), 3)),
              "mask": mask},
        "d": {**common, "seed": 7, "init_image": data_url(noise_image((64, 64), 4)),
              "mask": mask},
    }
    expected = alone(model, jobs)

    answers = run_together(model, jobs)

    assert model.device_queue.batch_sizes == {1: 4, 2: 2}  # img2img apart from inpaint
    for name, other in [("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")]:
        assert_same_images(pixels(answers[name]), expected[name], expected[other][0])


def test_jobs_that_differ_in_size_steps_or_guidance_never_share_a_call(
    tiny_sd_path: Path,
) -> None:
    model = load(tiny_sd_path, batch_max=8)
    base = {"prompt": "a tree", "seed": 9, **SMALL}
    jobs = {"a": base, "b": {**base, "seed": 10}, "wide": {**base, "width": 128},
            "longer": {**base, "num_inference_steps": 4}, "guided": {**base, "guidance_scale": 3}}

    answers = run_together(model, jobs)

    assert model.device_queue.batch_sizes == {2: 1, 1: 3}
    assert decode(answers["wide"][0]["image"]).size == (128, 64)
    assert all(isinstance(answer, list) for answer in answers.values())


def test_rows_are_bounded_by_batch_max(tiny_sd_path: Path) -> None:
    model = load(tiny_sd_path, batch_max=3)
    jobs = {name: {**job, "num_outputs": 2} for name, job in THREE_JOBS.items()}

    answers = run_together(model, jobs)

    assert model.device_queue.batch_sizes == {1: 3}  # 2 + 2 images would pass 3
    assert all(len(answer) == 2 for answer in answers.values())


def test_a_batch_that_runs_out_of_memory_runs_again_job_by_job(
    tiny_sd_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load(tiny_sd_path, batch_max=8)
    expected = alone(model, THREE_JOBS)
    pipeline_class = type(model.pipeline)
    real_call = pipeline_class.__call__
    calls: list[int] = []

    def small_memory(pipe: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(kwargs["generator"]))
        if len(kwargs["generator"]) > 2:
            raise MemoryError("simulated: a batch this big does not fit")
        return real_call(pipe, *args, **kwargs)

    monkeypatch.setattr(pipeline_class, "__call__", small_memory)
    answers = run_together(model, THREE_JOBS)

    assert calls[0] == 4 and sorted(calls[1:]) == [1, 1, 2]
    for name, other in [("cat", "boat"), ("dog", "cat"), ("boat", "cat")]:
        assert_same_images(pixels(answers[name]), expected[name], expected[other][0])


def test_a_worker_with_sd_batch_max_runs_jobs_taken_together_as_one_batch(
    tmp_path: Path, tiny_sd_path: Path
) -> None:
    model = StableDiffusionModel(str(tiny_sd_path), device="cpu", batch_max=4,
                                 batch_wait_s=DEADLINE)  # the batch starts once it is full
    h = make_harness(tmp_path, model=model, slots=4)
    for n in range(4):
        h.api.submit({"prompt": f"job {n}", "seed": n, **SMALL}, job_id=f"j{n}")
    h.start()
    assert h.api.wait_for_results(4, timeout=DEADLINE)
    h.stop()

    assert model.device_queue.batch_sizes == {4: 1}
    for n in range(4):
        result = h.api.results[f"j{n}"]
        assert result.error is None, result.error
        assert Path(result.output[0]["image"]).read_bytes()[:4] == b"\x89PNG"
        assert result.output[0]["seed"] == n


def test_every_denoising_step_runs_on_the_device_thread_whatever_the_job_threads(
    tiny_sd_path: Path,
) -> None:
    model = load(tiny_sd_path, batch_max=1)

    class ThreadContext(StepContext):
        def __init__(self) -> None:
            super().__init__()
            self.threads: set[str] = set()

        def progress(self, update: Any) -> None:
            self.threads.add(threading.current_thread().name)
            super().progress(update)

    contexts = {name: ThreadContext() for name in THREE_JOBS}
    answers = run_together(model, THREE_JOBS, dict(contexts))

    assert model.device_queue.batch_sizes == {1: 3}  # batching off: one job per call
    assert all(isinstance(answer, list) for answer in answers.values())
    assert {name: ctx.threads for name, ctx in contexts.items()} == {
        name: {"model-device"} for name in THREE_JOBS}
