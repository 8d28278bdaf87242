"""Input limits come from settings: a job at a limit is accepted, one past it is refused with a
message that names the limit. And no input makes the worker fetch a URL.

``MAX_INPUT_BYTES`` is checked by the real worker process. The ``SD_MAX_*`` limits are checked
on the Stable Diffusion model as the composition root builds it from settings
(``app.bootstrap.build_model``): the model validates an input before it needs its weights, so
an accepted input gets as far as "not loaded" and a refused one stops at ``InvalidInput``.
Downloads: with ``INPUT_URL_FETCH`` off (the default), ``init_image`` and ``mask`` given as
URLs are refused, every other field that could name an image is refused as unknown or not
supported, and a loopback server counts that no job, even one whose prompt is a URL, reaches
it. Input URLs are fetched only by ``adapters/http/safe_fetch.py``, never by the model's code.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from adapters.clock import SystemClock
from adapters.stable_diffusion.limits import UNSUPPORTED_FIELDS
from app.bootstrap import build_model
from app.settings import load_settings
from domain.errors import ConfigurationError, InvalidInput, ModelError
from domain.execution import RunningJob
from domain.job import Job
from domain.ports import Model
from tests.support.fault_kit import RecordingServer, Rig
from tests.support.worker_process import ROOT


def context(job_input: dict[str, Any]) -> RunningJob:
    clock = SystemClock()
    return RunningJob(Job("limits", job_input, clock.now()), started=clock.now(), timeout_s=60,
                      clock=clock)


def sd_model(**limits: int) -> Model:
    # the family is forced: the weights that would tell it do not exist here
    settings = load_settings(env_file=None, MODEL="stable_diffusion", SD_PIPELINE="sd",
                             MODEL_PATH="/nonexistent/weights", **limits)
    return build_model(settings)


def outcome(model: Model, job_input: dict[str, Any]) -> str:
    try:
        model.run(job_input, context(job_input))
    except InvalidInput as exc:
        return str(exc)
    except ModelError as exc:
        assert "not loaded" in str(exc)
        return "accepted"
    raise AssertionError("an unloaded model cannot succeed")


@pytest.mark.parametrize(
    ("setting", "value", "at_limit", "past_limit", "message"),
    [
        ("SD_MAX_PROMPT_CHARS", 12, {"prompt": "p" * 12}, {"prompt": "p" * 13},
         "prompt: must be at most 12 characters (got 13)"),
        ("SD_MAX_PIXELS", 512 * 576, {"prompt": "p", "width": 512, "height": 576},
         {"prompt": "p", "width": 520, "height": 576},
         "width x height: 520x576 is 299520 pixels, more than the limit of 294912"),
        ("SD_MAX_OUTPUTS", 2, {"prompt": "p", "num_outputs": 2},
         {"prompt": "p", "num_outputs": 3}, "num_outputs: must be at most 2 (got 3)"),
        ("SD_MAX_STEPS", 30, {"prompt": "p", "num_inference_steps": 30},
         {"prompt": "p", "num_inference_steps": 31},
         "num_inference_steps: must be at most 30 (got 31)"),
    ],
    ids=["prompt length", "image pixels", "number of outputs", "denoising steps"],
)
def test_each_stable_diffusion_limit_comes_from_its_setting(
    setting: str, value: int, at_limit: dict[str, Any], past_limit: dict[str, Any],
    message: str,
) -> None:
    model = sd_model(**{setting: value})
    assert outcome(model, at_limit) == "accepted"
    assert outcome(model, past_limit) == f"invalid input: {message}"
    assert outcome(sd_model(), past_limit) == "accepted"  # the default limit is wider


def test_a_limit_below_what_a_default_job_needs_is_refused_at_start() -> None:
    with pytest.raises(ConfigurationError, match="SD_MAX_PIXELS"):
        load_settings(env_file=None, SD_MAX_PIXELS=64 * 64)


def test_max_input_bytes_comes_from_its_setting_in_the_real_worker(rig: Rig) -> None:
    worker = rig.start(MAX_INPUT_BYTES="200")
    at_limit = rig.submit({"pad": "x" * 190})  # {"pad":"xxx..."}: 200 bytes of JSON
    past_limit = rig.submit({"pad": "x" * 191})
    assert rig.wait_result(at_limit) == {"output": {"pad": "x" * 190}}
    assert rig.wait_result(past_limit) == {
        "error": "invalid input: input is 201 bytes, over the limit of 200 bytes"
    }
    assert worker.terminate() == 0
    rig.assert_delivered_once()


# --- no downloads ---------------------------------------------------------------------------
@pytest.fixture
def image_host() -> Any:
    server = RecordingServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_no_input_field_can_name_an_image_to_download_while_url_fetching_is_off(
    image_host: RecordingServer, tiny_sd_model: Model
) -> None:
    url = f"{image_host.url}/cat.png"
    refusals = {"init_image": "init_image: URLs are not fetched by this worker",
                "image_url": "image_url: URLs are not fetched by this worker",  # worker-sdxl's
                "image": "image: unknown field (this worker calls it init_image)",
                "mask_image": "mask_image: unknown field (this worker calls it mask)"}
    refiner_fields = {"use_refiner", "refiner_inference_steps", "high_noise_frac"}
    refusals |= {field: f"{field}: not supported by this worker"
                 for field in UNSUPPORTED_FIELDS - {"init_image", "image", "mask", "mask_image",
                                                    "prompt_strength", "strength"}
                 - refiner_fields}
    refusals |= {  # the refiner's settings are checked even where they are ignored
        "use_refiner": "use_refiner: not supported by Stable Diffusion 1.x/2.x pipelines (only "
        "SDXL has a refiner)",
        "refiner_inference_steps": "refiner_inference_steps: must be an integer (got 'http",
        "high_noise_frac": "high_noise_frac: must be a number (got 'http"}
    refusals |= {field: f"{field}: LoRA is off on this worker" for field in ("lora", "loras")}
    for field, message in sorted(refusals.items()):
        job_input: dict[str, Any] = {"prompt": "a cat", field: url}
        with pytest.raises(InvalidInput, match=re.escape(message)):
            tiny_sd_model.run(job_input, context(job_input))
    both = {"prompt": "a cat", "init_image": url, "mask": url}
    with pytest.raises(InvalidInput) as caught:
        tiny_sd_model.run(both, context(both))
    assert str(caught.value).count("URLs are not fetched by this worker") == 2
    # a prompt that is a URL is only text
    text_only: dict[str, Any] = {"prompt": url, "negative_prompt": url, "width": 64,
                                 "height": 64, "num_inference_steps": 2}
    images = tiny_sd_model.run(text_only, context(text_only))
    assert len(images) == 1
    assert image_host.captured == [], "the worker fetched a URL from a job's input"


DOWNLOADERS = re.compile(
    r"\bload_image\b|urlopen|urllib\.request|\brequests\b|\bhttpx\b|\baiohttp\b|urlretrieve"
)


def test_the_model_code_has_no_way_to_download_an_input() -> None:
    model_code = sorted((ROOT / "adapters" / "stable_diffusion").glob("*.py"))
    assert model_code
    found = [f"{p.name}: {m.group(0)}" for p in model_code
             for m in DOWNLOADERS.finditer(p.read_text())]
    assert found == []


def test_limits_are_documented_in_the_readme_settings_table() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("MAX_INPUT_BYTES", "SD_MAX_PROMPT_CHARS", "SD_MAX_PIXELS", "SD_MAX_OUTPUTS",
                 "SD_MAX_STEPS"):
        assert f"| `{name}` |" in readme
