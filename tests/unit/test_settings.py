"""Settings: the seed's names and today's RUNPOD_* names, which one wins, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import load_settings
from domain.errors import ConfigurationError

ENV_NAMES = [
    "DEBUG", "TEST_LOCAL", "MODEL", "EXECUTION_TIMEOUT", "TERMINATE_IDLE_TIME", "AI_API_KEY",
    "RUNPOD_AI_API_KEY", "WEBHOOK_GET_WORK", "RUNPOD_WEBHOOK_GET_JOB", "WEBHOOK_POST_OUTPUT",
    "RUNPOD_WEBHOOK_POST_OUTPUT", "WEBHOOK_PING", "RUNPOD_WEBHOOK_PING", "PING_INTERVAL",
    "RUNPOD_PING_INTERVAL", "RUNPOD_POD_ID", "RUNPOD_API_KEY", "WORKER_ZERO",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_seeds() -> None:
    s = load_settings(env_file=None)
    timings = (s.EXECUTION_TIMEOUT, s.TERMINATE_IDLE_TIME, s.PING_INTERVAL)
    assert timings == (300_000, 60_000, 10_000)
    assert s.MODEL == "stable_diffusion"
    assert s.local_mode  # no take webhook: the local run


def test_runpod_names_alone_configure_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPOD_WEBHOOK_GET_JOB", "https://api.example/job-take/$ID?gpu=A")
    monkeypatch.setenv("RUNPOD_WEBHOOK_POST_OUTPUT", "https://api.example/job-done/$ID?gpu=A")
    monkeypatch.setenv("RUNPOD_AI_API_KEY", "rp-key-123456")
    monkeypatch.setenv("RUNPOD_PING_INTERVAL", "4000")
    s = load_settings(env_file=None)
    assert s.WEBHOOK_GET_WORK == "https://api.example/job-take/$ID?gpu=A"
    assert s.AI_API_KEY is not None and s.AI_API_KEY.get_secret_value() == "rp-key-123456"
    assert s.PING_INTERVAL == 4000
    assert not s.local_mode


def test_the_seeds_name_wins_when_both_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_GET_WORK", "https://mine.example/take/$ID")
    monkeypatch.setenv("RUNPOD_WEBHOOK_GET_JOB", "https://platform.example/take/$ID")
    monkeypatch.setenv("PING_INTERVAL", "1000")
    monkeypatch.setenv("RUNPOD_PING_INTERVAL", "2000")
    s = load_settings(env_file=None)
    assert s.WEBHOOK_GET_WORK == "https://mine.example/take/$ID"
    assert s.PING_INTERVAL == 1000


def test_the_environment_wins_over_the_env_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("MODEL=echo\nEXECUTION_TIMEOUT=1234\n")
    monkeypatch.setenv("EXECUTION_TIMEOUT", "999")
    s = load_settings()
    assert s.MODEL == "echo" and s.EXECUTION_TIMEOUT == 999


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("EXECUTION_TIMEOUT", "abc", "invalid setting EXECUTION_TIMEOUT (got 'abc'):"),
        ("TERMINATE_IDLE_TIME", "-5", "invalid setting TERMINATE_IDLE_TIME (got '-5'):"),
        ("WEBHOOK_GET_WORK", "ftp://x", "must start with http:// or https://"),
        ("DEBUG", "maybe", "invalid setting DEBUG"),
    ],
)
def test_a_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env_file=None)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_runpod_name_is_reported_under_the_name_that_was_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNPOD_PING_INTERVAL", "often")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env_file=None)
    assert "PING_INTERVAL" in str(caught.value)


def test_blank_webhooks_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_GET_WORK", "  ")
    assert load_settings(env_file=None).local_mode


def test_secrets_are_never_shown_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_API_KEY", "very-secret-key-987")
    monkeypatch.setenv("RUNPOD_API_KEY", "another-secret-654")
    s = load_settings(env_file=None)
    assert "very-secret" not in repr(s) and "another-secret" not in repr(s)
    assert "987" not in str(s.AI_API_KEY)
