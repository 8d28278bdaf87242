"""What a worker says at start (its mode, where jobs come from and images go), its one id per
process, and the hint a pod-mode worker without weights gets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from app.bootstrap import PROCESS_WORKER_ID, worker_id
from app.settings import Settings, load_settings
from app.settings_typos import known_names
from app.start_notes import log_start, mode_line
from domain.errors import ConfigurationError

TAKE = "http://jobs.example:8000/v2/ep/job-take/$ID?gpu=x"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in known_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def settings(**values: Any) -> Settings:
    return load_settings(env_file=None, **values)


def test_a_local_run_says_why_it_is_one_and_how_to_take_jobs_instead() -> None:
    line = mode_line(settings())

    assert line == (
        "local run (no take webhook or JOB_QUEUE is set): the jobs in test_inputs.json, results "
        "printed on standard output, images written under outputs/; to take jobs from a job "
        "API, export WEBHOOK_GET_WORK (or RUNPOD_WEBHOOK_GET_JOB) and its companions, or "
        "JOB_QUEUE")


def test_test_local_is_named_as_the_reason_and_the_file_given_is_named() -> None:
    line = mode_line(settings(TEST_LOCAL=True, WEBHOOK_GET_WORK=TAKE), Path("mine.json"))
    assert line.startswith("local run (TEST_LOCAL=true): the jobs in mine.json,")


def test_a_pod_says_where_it_takes_jobs_from_as_which_worker_and_where_images_go() -> None:
    line = mode_line(settings(WEBHOOK_GET_WORK=TAKE, STORAGE="base64"))

    assert line == (f"pod mode: taking jobs from the job API at jobs.example:8000 as worker "
                    f"{PROCESS_WORKER_ID}, images returned inside the results as data URLs")


def test_a_worker_on_a_redis_queue_names_it_and_never_its_password() -> None:
    line = mode_line(settings(JOB_QUEUE="redis://:s3cret-pass@redis.example:6379/0",
                              RUNPOD_POD_ID="pod-2", STORAGE="base64"))

    assert line.startswith("pod mode: taking jobs from the Redis queue podworker at "
                           "redis.example:6379 as worker pod-2,")
    assert "s3cret" not in line


def test_a_pod_with_a_bucket_names_it_and_its_endpoint() -> None:
    line = mode_line(settings(WEBHOOK_GET_WORK=TAKE, RUNPOD_POD_ID="pod-1", BUCKET_NAME="imgs",
                              BUCKET_ENDPOINT_URL="https://s3.example"))
    assert line.endswith("as worker pod-1, images uploaded to bucket imgs at s3.example")


def test_the_start_logs_the_mode_and_each_mistyped_setting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="podworker.start"):
        log_start(settings(), test_input=None, env_file=None, environ={"SD_PIPLINE": "sdxl"})

    assert [(r.levelname, getattr(r, "event", "")) for r in caplog.records] == [
        ("INFO", "mode"), ("WARNING", "unknown_setting")]
    assert "did you mean SD_PIPELINE?" in caplog.records[1].getMessage()


def test_a_worker_without_a_pod_id_has_one_id_for_the_whole_process() -> None:
    unset = settings(WEBHOOK_GET_WORK=TAKE)

    assert worker_id(unset) == worker_id(unset) == PROCESS_WORKER_ID
    assert PROCESS_WORKER_ID.startswith("podworker-")
    assert worker_id(settings(RUNPOD_POD_ID="pod-7")) == "pod-7"


def test_a_pod_without_model_path_is_pointed_to_the_tiny_pipeline() -> None:
    from app.sd_wiring import build_stable_diffusion

    with pytest.raises(ConfigurationError) as raised:
        build_stable_diffusion(settings(WEBHOOK_GET_WORK=TAKE))

    assert "invalid setting MODEL_PATH: required for MODEL=stable_diffusion" in str(raised.value)
    assert ("`.venv/bin/podworker make-tiny-model .podworker/tiny-sd` and "
            "MODEL_PATH=.podworker/tiny-sd") in str(raised.value)
