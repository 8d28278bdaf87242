"""``JOB_QUEUE`` and its companions: validated, wired to the Redis adapter (RunPod stays the
default), their secrets kept out of messages; the queue's id rule is the worker's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.kubernetes.pod_control import JobCompletesPodControl
from adapters.local.echo_model import EchoModel
from adapters.local.outbox import InMemoryOutbox
from adapters.redis.job_api import RedisJobApi
from adapters.runpod.job_api import RunPodJobApi
from app.bootstrap import build_worker, redactor_for
from app.config import queue_config_from
from app.settings import Settings, load_settings
from domain.errors import ConfigurationError
from domain.job import job_from_wire
from streamqueue.layout import Layout, job_id_problem


def settings(**values: Any) -> Settings:
    return load_settings(env_file=None, **values)


def test_runpod_stays_the_default_and_a_redis_url_turns_the_queue_on() -> None:
    assert settings().JOB_QUEUE is None
    assert settings().local_mode
    assert not settings(JOB_QUEUE="redis://redis:6379/0").local_mode
    assert settings(JOB_QUEUE="redis://redis:6379/0", TEST_LOCAL=True).local_mode


def test_with_job_queue_the_worker_takes_from_redis_and_its_idle_exit_deletes_nothing(
    tmp_path: Path,
) -> None:
    worker = build_worker(settings(JOB_QUEUE="redis://127.0.0.1:1/0", STATE_DIR=tmp_path),
                          model=EchoModel(), outbox=InMemoryOutbox())
    api = worker.stages.intake._api
    assert isinstance(api, RedisJobApi)
    assert worker.stages.job_stops is not None and worker.stages.job_stops._source is api
    assert isinstance(worker._pod, JobCompletesPodControl)
    http = build_worker(settings(WEBHOOK_GET_WORK="http://127.0.0.1:1/v2/x/job-take/$ID",
                                 WEBHOOK_POST_OUTPUT="http://127.0.0.1:1/v2/x/job-done/$ID",
                                 STATE_DIR=tmp_path / "rp"),
                        model=EchoModel(), outbox=InMemoryOutbox())
    assert isinstance(http.stages.intake._api, RunPodJobApi)


@pytest.mark.parametrize("url", ["http://redis:6379", "redis-host:6379", "postgres://x/y"])
def test_job_queue_must_be_a_redis_url_and_the_error_does_not_echo_it(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        settings(JOB_QUEUE=url)
    message = str(caught.value)
    assert message.startswith("invalid setting JOB_QUEUE: must be a Redis URL")
    assert url not in message


@pytest.mark.parametrize("name", ["", "a b", "x:y", "-lead", "q" * 65])
def test_a_queue_name_is_a_plain_word(name: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid setting JOB_QUEUE_NAME"):
        settings(JOB_QUEUE_NAME=name)
    with pytest.raises(ValueError):
        Layout(name)


def test_the_redis_password_comes_from_redis_password_first_then_the_url_and_is_scrubbed() -> None:
    in_url = settings(JOB_QUEUE="redis://:url%2Dpa55-Secret-93@redis:6379/0")
    assert in_url.queue_password == "url-pa55-Secret-93"
    both = settings(JOB_QUEUE="redis://:url-pa55-Secret-93@redis:6379/0",
                    REDIS_PASSWORD="env-pa55-Secret-12")
    assert both.queue_password == "env-pa55-Secret-12"
    scrub = redactor_for(both)
    assert "Secret" not in scrub("auth failed for env-pa55-Secret-12")
    assert "url-pa55-Secret-93" not in repr(both)


def test_the_queue_timing_comes_from_the_lease() -> None:
    config = queue_config_from(settings(JOB_LEASE=8000, JOB_API_TIMEOUT=2000))
    assert (config.lease_s, config.block_s, config.timeout_s) == (8.0, 2.0, 2.0)
    assert queue_config_from(settings()).block_s == 5.0  # never longer: idle exit stays prompt


@pytest.mark.parametrize("job_id", ["a", "x" * 256, "x" * 257, "", "tab\there", "é-ok",
                                    "../up", "nul\x00", " spaced "])
def test_the_queue_refuses_exactly_the_ids_the_worker_cannot_answer(job_id: str) -> None:
    worker_takes = job_from_wire({"id": job_id, "input": {}}, 0.0) is not None
    assert (job_id_problem(job_id) is None) == worker_takes
