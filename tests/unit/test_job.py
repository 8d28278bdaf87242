"""Building jobs from the wire, results to the wire, and names safe for paths and keys."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.job import JobResult, job_from_wire, safe_name


def test_a_well_formed_job_is_read_with_its_id_input_and_time() -> None:
    job = job_from_wire({"id": "abc-1", "input": {"prompt": "x"}, "extra": 1}, now=12.5)
    assert job is not None
    assert (job.id, job.input, job.taken_at, job.problem) == ("abc-1", {"prompt": "x"}, 12.5, None)


def test_the_platforms_other_fields_are_kept_for_handlers_and_never_shown_in_repr() -> None:
    config = {"bucketName": "b", "accessId": "AKIAEXAMPLE", "accessSecret": "s3cr3t-value"}
    job = job_from_wire({"id": "j", "input": {}, "s3Config": config, "webhook": "https://x"},
                        now=0)

    assert job is not None
    assert job.platform_fields == {"s3Config": config, "webhook": "https://x"}
    assert "s3cr3t" not in repr(job) and "AKIA" not in repr(job)


def test_a_jobs_own_credentials_are_its_s3configs_access_id_and_secret() -> None:
    config = {"bucketName": "b", "accessId": "AKIAEXAMPLE", "accessSecret": "s3cr3t-value",
              "endpointUrl": "https://s3.example"}
    job = job_from_wire({"id": "j", "input": {}, "s3Config": config}, now=0)
    assert job is not None and job.secrets() == ("AKIAEXAMPLE", "s3cr3t-value")
    for odd in ({"id": "j", "input": {}}, {"id": "j", "input": {}, "s3Config": "x"},
                {"id": "j", "input": {}, "s3Config": {"accessId": 3, "accessSecret": ""}}):
        plain = job_from_wire(odd, now=0)
        assert plain is not None and plain.secrets() == ()


def test_a_numeric_id_is_read_as_a_string() -> None:
    job = job_from_wire({"id": 42, "input": {}}, now=0)
    assert job is not None and job.id == "42"


@pytest.mark.parametrize(
    "payload",
    [None, [], "x", 3, {}, {"id": None}, {"id": True}, {"id": ""}, {"id": ["a"]},
     {"id": "x" * 1025}, {"id": "lone \ud800 surrogate"}],
)
def test_payloads_without_an_id_a_result_url_can_carry_are_rejected(payload: Any) -> None:
    assert job_from_wire(payload, now=0) is None


@pytest.mark.parametrize(
    ("job_id", "problem"),
    [("x" * 300, "job id is 300 characters long, over the 256 this worker runs"),
     ("x" * 1024, "job id is 1024 characters long"),
     ("line\nbreak", "job id holds control or unprintable characters"),
     ("nul\x00id", "job id holds control or unprintable characters")],
)
def test_an_id_that_is_too_long_or_unprintable_is_kept_to_answer_with_an_error(
    job_id: str, problem: str
) -> None:
    job = job_from_wire({"id": job_id, "input": {"prompt": "x"}}, now=0)
    assert job is not None and job.id == job_id
    assert job.problem is not None and job.problem.startswith(problem)
    assert job.input == {}


@pytest.mark.parametrize(
    ("raw_input", "problem"),
    [
        (None, 'input must be a JSON object, got missing: send the job as {"input": {...}}, '
               'its fields inside "input"'),
        ([1], "input must be a JSON object, got a JSON array"),
        ("s", "input must be a JSON object, got a JSON string"),
        (1.5, "input must be a JSON object, got a JSON number"),
        (False, "input must be a JSON object, got a JSON boolean"),
    ],
)
def test_a_job_with_a_bad_input_keeps_its_id_and_says_what_is_wrong(
    raw_input: Any, problem: str
) -> None:
    payload = {"id": "j"} if raw_input is None else {"id": "j", "input": raw_input}
    job = job_from_wire(payload, now=0)
    assert job is not None and job.id == "j" and job.problem == problem


def test_a_job_sent_without_its_input_envelope_is_told_how_to_wrap_its_fields() -> None:
    job = job_from_wire({"id": "j", "prompt": "a cat", "width": 64, "webhook": "x"}, now=0)

    assert job is not None and job.problem == (
        'input must be a JSON object, got missing: its fields (prompt, width) belong inside '
        '"input": send {"input": {"prompt": ..., "width": ...}}, not {"prompt": ..., '
        '"width": ...}')


def test_the_wrapping_hint_stays_one_line_whatever_the_stray_keys_hold() -> None:
    job = job_from_wire({"id": "j", "a\nb": 1, "\u2028": 2}, now=0)

    assert job is not None and job.problem is not None
    assert job.problem.isprintable()
    assert 'its fields ("a\\nb", "\\u2028") belong inside "input"' in job.problem


def test_an_input_that_is_null_is_not_mistaken_for_a_missing_envelope() -> None:
    job = job_from_wire({"id": "j", "input": None}, now=0)
    assert job is not None and job.problem == "input must be a JSON object, got missing"


def test_results_go_on_the_wire_as_output_or_a_string_error() -> None:
    assert JobResult.success("a", [1]).to_wire() == {"output": [1]}
    assert JobResult.failure("a", "bad").to_wire() == {"error": "bad"}
    assert JobResult.failure("a", "").to_wire() == {"error": "unknown error"}
    record = JobResult.failure("a", "bad").to_json()
    assert JobResult.from_json(record) == JobResult.failure("a", "bad")


def test_runpod_style_ids_are_their_own_safe_names() -> None:
    assert safe_name("sync-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901-u1") == (
        "sync-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901-u1"
    )


@given(st.text(min_size=1, max_size=300))
def test_every_id_maps_to_one_safe_path_segment(job_id: str) -> None:
    name = safe_name(job_id)
    assert name and "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in (".", "..") and not name.startswith(".")
    assert len(name) <= 128 + 13


def test_different_ids_that_clean_up_alike_keep_different_names() -> None:
    assert safe_name("a/b") != safe_name("a_b")
    assert safe_name("../x") != safe_name("__x")
