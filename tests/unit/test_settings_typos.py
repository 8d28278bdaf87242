"""Names that look like podworker settings but are none are caught, with a "did you mean", from
the environment and from ``.env``; the known names come from the settings model itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings
from app.settings_typos import (
    edit_distance,
    known_names,
    known_prefixes,
    suspicious_settings,
)


def described(environ: dict[str, str], env_file: Path | None = None) -> list[str]:
    return [suspect.describe() for suspect in suspicious_settings(environ, env_file)]


def test_a_typo_in_the_environment_gets_a_did_you_mean() -> None:
    assert described({"SD_PIPLINE": "sdxl"}) == [
        "unknown setting SD_PIPLINE in the environment is ignored: did you mean SD_PIPELINE?"]


def test_a_typo_in_the_env_file_names_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MODLE_PATH=/models/sd\nMODEL=echo\n")

    assert described({}, env_file) == [
        f"unknown setting MODLE_PATH in {env_file} is ignored: did you mean MODEL_PATH?"]


@pytest.mark.parametrize(("name", "meant"), [
    ("MODLE_PATH", "MODEL_PATH"),  # two letters swapped: one edit
    ("BUCKET_ENDPONT_URL", "BUCKET_ENDPOINT_URL"),
    ("EXECUTION_TIMOUT", "EXECUTION_TIMEOUT"),
    ("sd_pipeline", "SD_PIPELINE"),  # names are case-sensitive
    ("MODE", "MODEL"),
    ("RUNPOD_PODID", "RUNPOD_POD_ID"),
    ("RUNPOD_WEBHOOK_GET_WORK", "WEBHOOK_GET_WORK"),  # the two namings mixed
    ("RUNPOD_AI_API_KY", "RUNPOD_AI_API_KEY"),
])
def test_names_close_to_a_known_one_suggest_it(name: str, meant: str) -> None:
    [suspect] = suspicious_settings({name: "x"})
    assert suspect.suggestion == meant


@pytest.mark.parametrize("name", ["SD_FOO", "BUCKET_NAMES_LIST", "INPUT_IMAGE_SIZE",
                                  "MODEL_REVISION", "WEBHOOK_GET_JOB"])
def test_unknown_names_under_a_known_prefix_are_flagged(name: str) -> None:
    [suspect] = suspicious_settings({name: "x"})
    assert suspect.name == name


@pytest.mark.parametrize("name", [
    "PATH", "HOME", "LANG", "TERM", "HOSTNAME", "PWD", "SHELL", "USER", "HF_HOME",
    "CUDA_VISIBLE_DEVICES", "PYTHONPATH", "MAX_JOBS", "TEST_JOBS", "INPUT", "BUCKET",
    # RunPod sets these on its pods, and RunPod's SDK reads some: the platform's, not typos
    "RUNPOD_GPU_COUNT", "RUNPOD_PUBLIC_IP", "RUNPOD_TCP_PORT_22", "RUNPOD_ENDPOINT_ID",
    "RUNPOD_DEBUG", "RUNPOD_DEBUG_LEVEL", "RUNPOD_LOG_LEVEL", "RUNPOD_ENDPOINT_BASE_URL",
])
def test_other_programs_variables_are_left_alone(name: str) -> None:
    assert suspicious_settings({name: "x"}) == []


def test_every_known_name_and_alias_is_accepted() -> None:
    names = known_names()
    assert {"WEBHOOK_GET_WORK", "RUNPOD_WEBHOOK_GET_JOB", "SD_PIPELINE", "BUCKET_NAME"} <= names
    assert suspicious_settings(dict.fromkeys(names, "x")) == []


def test_the_known_names_are_the_settings_models_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """A setting added to the model (by any change) is known here with no other edit."""
    field = Settings.model_fields["DEBUG"]
    monkeypatch.setitem(Settings.model_fields, "REDIS_QUEUE_NAME", field)

    assert "REDIS_QUEUE_NAME" in known_names()
    assert suspicious_settings({"REDIS_QUEUE_NAM": "x"})[0].suggestion == "REDIS_QUEUE_NAME"


def test_prefixes_are_those_three_known_names_share_except_the_platforms() -> None:
    prefixes = known_prefixes(known_names())
    assert {"SD_", "BUCKET_", "MODEL_", "INPUT_", "WEBHOOK_", "RUNPOD_WEBHOOK_"} <= prefixes
    assert "RUNPOD_" not in prefixes
    assert "JOB_" not in prefixes  # two names only: too generic a word to claim


def test_a_name_in_both_places_is_reported_once_as_the_env_files(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("SD_PIPLINE=sdxl\n")

    [suspect] = suspicious_settings({"SD_PIPLINE": "sd3"}, env_file)
    assert suspect.source == str(env_file)


def test_a_missing_env_file_is_no_problem(tmp_path: Path) -> None:
    assert suspicious_settings({}, tmp_path / "absent.env") == []


@pytest.mark.parametrize(("a", "b", "distance"), [
    ("MODEL", "MODEL", 0), ("MODLE", "MODEL", 1), ("MODL", "MODEL", 1), ("MODELS", "MODEL", 1),
    ("SD_PIPLINE", "SD_PIPELINE", 1), ("ABC", "XYZ", 3), ("", "AB", 2),
])
def test_the_edit_distance_counts_a_swap_of_neighbours_as_one_edit(
    a: str, b: str, distance: int
) -> None:
    assert edit_distance(a, b) == edit_distance(b, a) == distance


def test_for_a_handler_only_near_misses_are_flagged_never_the_handlers_own_settings() -> None:
    environ = {"MODEL_NAME": "llama", "MAX_MODEL_LEN": "8192", "SD_ANYTHING": "x",
               "MODLE_PATH": "/models/sd", "CONCURENCY": "4"}
    flagged = {s.name: s.suggestion for s in suspicious_settings(environ, prefixes=False)}
    assert flagged == {"MODLE_PATH": "MODEL_PATH", "CONCURENCY": "CONCURRENCY"}
    everything = {s.name for s in suspicious_settings(environ)}
    assert {"MODEL_NAME", "MAX_MODEL_LEN", "SD_ANYTHING"} <= everything  # a worker's own run
