"""``doctor``'s pod-control check says what the worker will really do when idle."""

from __future__ import annotations

from typing import Any

from app.doctor import OK, WARN, check_self_termination
from app.settings import Settings, load_settings

TAKE = "https://api.runpod.ai/v2/ep/job-take/$RUNPOD_POD_ID"


def settings(**values: Any) -> Settings:
    return load_settings(env_file=None, RUNPOD_WEBHOOK_GET_JOB=TAKE, **values)


def test_an_empty_api_key_is_missing_as_the_worker_sees_it() -> None:
    check = check_self_termination(settings(RUNPOD_API_KEY="", RUNPOD_POD_ID="pod-1"))

    assert check.status == WARN and "RUNPOD_API_KEY" in check.detail


def test_on_the_redis_queue_an_idle_worker_ends_its_kubernetes_job() -> None:
    check = check_self_termination(settings(JOB_QUEUE="redis://redis:6379/0"))

    assert check.status == OK and "Kubernetes Job completes" in check.detail


def test_with_a_key_and_a_pod_id_the_pod_deletes_itself() -> None:
    check = check_self_termination(settings(RUNPOD_API_KEY="k" * 20, RUNPOD_POD_ID="pod-1"))

    assert check.status == OK and "deletes itself" in check.detail
