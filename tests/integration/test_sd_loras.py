"""LoRA per job on the tiny pipelines of every family diffusers supports LoRA for (CPU).

The LoRAs are made here (random, saved as safetensors in diffusers' PEFT format: see
tests/support/tiny_lora.py) and put in a LoRA folder, as a user puts them on a network volume.
"The base image" is the image the same model made for the same job before any LoRA was loaded,
and is compared bit for bit: a job without LoRA must not carry a trace of an earlier one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.sd_batch_kit import assert_same_images, pixels, run_together
from tests.support.sd_lora_kit import SMALL, lora_folder, lora_model, run_pixels, same

pytest.importorskip("peft")

JOB: dict[str, Any] = {"prompt": "a lighthouse on a cliff", "seed": 3, **SMALL}


def changed(image: Any, base: Any) -> float:
    """The share of pixels more than two levels away from the base image."""
    import numpy as np

    return float((np.abs(image - base) > 2).mean())


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux"])
def test_a_lora_changes_the_image_scale_zero_is_the_base_and_the_next_job_is_the_base_again(
    family: str, tiny_family_path: Callable[[str], Path], tiny_lora: Callable[..., Path],
    tmp_path: Path,
) -> None:
    folder = lora_folder(tmp_path / "loras", {"style": tiny_lora(family)})
    model = lora_model(tiny_family_path(family), folder, cache_dir=tmp_path / "cache")
    base = run_pixels(model, JOB)

    styled = run_pixels(model, {**JOB, "loras": [{"name": "style"}]})
    at_zero = run_pixels(model, {**JOB, "lora": "style", "lora_scale": 0.0})
    after = run_pixels(model, JOB)

    assert changed(styled[0], base[0]) > 0.2
    assert same(at_zero, base)
    assert same(after, base)
    assert model.adapters is not None and model.adapters.loads == 1  # loaded once, kept


def test_a_lora_with_text_encoder_layers_changes_the_prompt_encoding_exactly_as_peft_does(
    tiny_sd_path: Path, tiny_lora: Callable[..., Path], tmp_path: Path,
) -> None:
    import torch
    import transformers
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    lora = tiny_lora("sd", seed=2, text_encoder=True)
    model = lora_model(tiny_sd_path, lora_folder(tmp_path / "loras", {"te": lora}),
                       cache_dir=tmp_path / "cache")
    base = run_pixels(model, JOB)
    styled = run_pixels(model, {**JOB, "lora": "te"})
    # The reference: PEFT's own text encoder with the file's text-encoder weights.
    weights = {key.removeprefix("text_encoder."): value for key, value in load_file(lora).items()
               if key.startswith("text_encoder.")}
    plain = transformers.CLIPTextModel.from_pretrained(str(tiny_sd_path / "text_encoder"))
    reference = inject_adapter_in_model(
        LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]),
        plain, "default")
    set_peft_model_state_dict(reference, weights, adapter_name="default")
    pipe = model.pipeline
    ids = pipe.tokenizer(["a lighthouse"], return_tensors="pt").input_ids
    with torch.no_grad():  # the LoRA job left its adapter active
        loaded = model.device_queue.call(lambda: pipe.text_encoder(ids)[0])
        expected = reference(ids)[0]

    assert pipe.get_list_adapters().keys() == {"unet", "text_encoder"}
    assert torch.equal(loaded, expected)
    assert changed(styled[0], base[0]) > 0.2
    assert same(run_pixels(model, JOB), base)


def test_two_loras_in_one_job_apply_together_each_at_its_scale(
    tiny_sd_path: Path, tiny_lora: Callable[..., Path], tmp_path: Path,
) -> None:
    folder = lora_folder(tmp_path / "loras", {"a": tiny_lora("sd", seed=1),
                                              "b": tiny_lora("sd", seed=2)})
    model = lora_model(tiny_sd_path, folder, cache_dir=tmp_path / "cache")
    base = run_pixels(model, JOB)

    only_a = run_pixels(model, {**JOB, "loras": [{"name": "a"}]})
    both = run_pixels(model, {**JOB, "loras": [{"name": "a"}, {"name": "b", "scale": 0.7}]})
    b_at_zero = run_pixels(model, {**JOB, "loras": [{"name": "a"}, {"name": "b", "scale": 0}]})

    assert changed(both[0], only_a[0]) > 0.2
    assert same(b_at_zero, only_a)
    assert same(run_pixels(model, JOB), base)


def test_jobs_with_other_loras_or_scales_run_in_their_own_calls_and_each_gets_its_own_image(
    tiny_sd_path: Path, tiny_lora: Callable[..., Path], tmp_path: Path,
) -> None:
    folder = lora_folder(tmp_path / "loras", {"a": tiny_lora("sd", seed=1),
                                              "b": tiny_lora("sd", seed=2)})
    model = lora_model(tiny_sd_path, folder, cache_dir=tmp_path / "cache", batch_max=8)
    jobs = {
        "a": {**JOB, "loras": [{"name": "a"}]},
        "a-again": {**JOB, "seed": 11, "prompt": "a boat", "loras": [{"name": "a"}]},
        "b": {**JOB, "loras": [{"name": "b"}]},
        "a-half": {**JOB, "loras": [{"name": "a", "scale": 0.5}]},
        "plain": JOB,
    }
    alone = {name: run_pixels(model, job) for name, job in jobs.items()}
    assert model.device_queue.batch_sizes == {1: 5}

    answers = run_together(model, jobs)

    # Only the two jobs with the same LoRA at the same scale share a call.
    assert model.device_queue.batch_sizes == {1: 5 + 3, 2: 1}
    for name in ("b", "a-half", "plain"):  # each alone in its call: bit for bit
        assert same(pixels(answers[name]), alone[name]), name
    assert_same_images(pixels(answers["a"]), alone["a"], alone["b"][0])
    assert_same_images(pixels(answers["a-again"]), alone["a-again"], alone["a"][0])
    assert not same(alone["a"], alone["b"]) and not same(alone["a"], alone["a-half"])


def test_the_lru_drops_the_least_recently_used_lora_and_a_reloaded_one_gives_the_same_image(
    tiny_sd_path: Path, tiny_lora: Callable[..., Path], tmp_path: Path,
) -> None:
    from adapters.stable_diffusion.lora_sources import LoraLimits

    files = {"a": tiny_lora("sd", seed=1), "b": tiny_lora("sd", seed=2),
             "c": tiny_lora("sd", seed=3, text_encoder=True)}
    model = lora_model(tiny_sd_path, lora_folder(tmp_path / "loras", files),
                       cache_dir=tmp_path / "cache",
                       lora_limits=LoraLimits(max_per_job=2, cache_max=2))
    adapters = model.adapters
    assert adapters is not None

    def styled(name: str) -> list[Any]:
        return run_pixels(model, {**JOB, "lora": name})

    first_b = styled("b")
    styled("a")
    styled("b")  # b is now the most recently used
    styled("c")  # room for c: a goes, not b
    kept = set(adapters.loaded)
    assert adapters.loads == 3
    assert len(kept) == 2 and model.device_queue.call(
        lambda: sorted(model.pipeline.get_list_adapters()["unet"])) == sorted(
        f"lora_{key[:20]}" for key in kept)
    styled("b")
    assert adapters.loads == 3  # still loaded
    c_adapter = model.device_queue.call(lambda: model.pipeline.get_list_adapters())[
        "text_encoder"]
    again_a = styled("a")  # reloaded, dropping c (from the UNet and the text encoder)
    assert adapters.loads == 4
    lists = model.device_queue.call(model.pipeline.get_list_adapters)
    assert not set(c_adapter) & {name for names in lists.values() for name in names}
    assert same(styled("b"), first_b)
    assert same(again_a, styled("a"))
    assert same(run_pixels(model, {**JOB, "loras": [{"name": "a"}, {"name": "c"}]}),
                run_pixels(model, {**JOB, "loras": [{"name": "a"}, {"name": "c"}]}))


def test_the_same_file_under_two_names_is_one_adapter(
    tiny_sd_path: Path, tiny_lora: Callable[..., Path], tmp_path: Path,
) -> None:
    lora = tiny_lora("sd")
    folder = lora_folder(tmp_path / "loras", {"one": lora, "styles/two": lora})
    model = lora_model(tiny_sd_path, folder, cache_dir=tmp_path / "cache")

    by_name = run_pixels(model, {**JOB, "lora": "one"})
    by_path = run_pixels(model, {**JOB, "loras": [{"path": "styles/two.safetensors"}]})

    assert same(by_name, by_path)
    assert model.adapters is not None and model.adapters.loads == 1
