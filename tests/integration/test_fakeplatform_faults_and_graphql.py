"""Fault injection on the fake platform, and the real ``RunPodPodControl`` against its
``/graphql``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from adapters.runpod.pod_control import TERMINATE_MUTATION, RunPodPodControl
from domain.errors import PodControlUnavailable, RejectedByApi
from domain.ports import PodControl
from fakeplatform import FakeJobApiServer
from tests.support.http_fixtures import POD_API_KEY, WORKER_ID, SleepRecorder
from tests.support.platform_calls import done, http, take
from tests.support.replay_server import Recorded, ReplayServer

ROOT = Path(__file__).resolve().parents[2]
__all__ = ["http"]  # the fixture, used by name


# --- fault injection ----------------------------------------------------------------
def test_faults_posted_over_http_fail_the_next_requests_then_clear(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    fake_api.submit({})
    faults = http.post(f"{fake_api.url}/_faults",
                       json={"take": {"status": 500, "count": 2}}, timeout=5)
    assert faults.json() == {"take": [{"status": 500, "count": 2, "retry_after": None,
                                       "delay_s": 0.0, "body": None, "errors": None}]}
    assert [take(http, fake_api).status_code for _ in range(3)] == [500, 500, 200]
    assert fake_api.stats()["faults_served"] == 2
    http.post(f"{fake_api.url}/_faults", json={"ping": {"status": 503, "count": 5}}, timeout=5)
    assert http.delete(f"{fake_api.url}/_faults", timeout=5).status_code == 200
    assert http.get(f"{fake_api.url}/_faults", timeout=5).json() == {}


def test_a_429_fault_carries_retry_after_and_does_not_act_on_the_request(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    job_id = fake_api.submit({})
    take(http, fake_api)
    fake_api.inject_fault("done", status=429, retry_after=2)
    reply = done(http, fake_api, job_id, {"output": 1})
    assert (reply.status_code, reply.headers["Retry-After"]) == (429, "2")
    assert fake_api.results == {}


def test_a_delay_fault_delays_then_answers_normally(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    job_id = fake_api.submit({})
    fake_api.inject_fault("take", delay_s=0.2)
    started = time.monotonic()
    assert take(http, fake_api).json()["id"] == job_id
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize(
    "spec",
    [{"nowhere": {"status": 500}}, {"take": {"status": 500, "colour": "red"}},
     {"take": {"status": 500, "count": 0}}, {"take": {"status": 99}}, {"take": {}}, [1]],
)
def test_a_bad_fault_spec_is_refused_with_a_reason(
    fake_api: FakeJobApiServer, http: requests.Session, spec: Any
) -> None:
    reply = http.post(f"{fake_api.url}/_faults", json=spec, timeout=5)
    assert reply.status_code == 400
    assert reply.json()["error"]
    assert fake_api.pending_faults() == {}


# --- pod control against the fake's /graphql ------------------------------------------
def test_pod_control_conforms_to_the_port_and_terminates_this_pod(
    fake_api: FakeJobApiServer, make_pod_control: Callable[..., RunPodPodControl],
    sleeps: SleepRecorder,
) -> None:
    control: PodControl = make_pod_control(fake_api.graphql_url)
    control.terminate()
    assert fake_api.terminations == [WORKER_ID]
    assert sleeps.waits == []


def test_pod_control_sends_the_key_as_a_bearer_header_and_the_pod_id_as_a_variable(
    make_pod_control: Callable[..., RunPodPodControl],
) -> None:
    with ReplayServer(Recorded(200, {}, b'{"data": {"podTerminate": null}}')) as server:
        make_pod_control(f"{server.url}/graphql", pod_id='p"1 }').terminate()
    [request] = server.captured
    assert request.target == "/graphql"
    assert request.headers["authorization"] == f"Bearer {POD_API_KEY}"
    assert request.json() == {"query": TERMINATE_MUTATION, "variables": {"podId": 'p"1 }'}}


def test_a_graphql_error_is_a_permanent_failure_and_is_not_retried(
    fake_api: FakeJobApiServer, make_pod_control: Callable[..., RunPodPodControl],
    sleeps: SleepRecorder,
) -> None:
    fake_api.inject_fault("graphql", errors=["Pod not found"])
    with pytest.raises(RejectedByApi, match="Pod not found"):
        make_pod_control(fake_api.graphql_url).terminate()
    assert fake_api.requests["graphql"] == 1
    assert sleeps.waits == []
    assert fake_api.terminations == []


def test_pod_control_retries_server_errors_then_succeeds(
    fake_api: FakeJobApiServer, make_pod_control: Callable[..., RunPodPodControl],
    sleeps: SleepRecorder,
) -> None:
    fake_api.inject_fault("graphql", status=502, count=2)
    make_pod_control(fake_api.graphql_url).terminate()
    assert len(sleeps.waits) == 2
    assert fake_api.terminations == [WORKER_ID]


def test_pod_control_gives_up_with_a_transient_error_when_unreachable(
    closed_port_url: str, make_pod_control: Callable[..., RunPodPodControl],
    sleeps: SleepRecorder,
) -> None:
    with pytest.raises(PodControlUnavailable, match="unreachable"):
        make_pod_control(f"{closed_port_url}/graphql").terminate()
    assert len(sleeps.waits) == 4


def test_a_wrong_key_is_permanent_says_which_setting_and_never_shows_the_key(
    fake_api: FakeJobApiServer, make_pod_control: Callable[..., RunPodPodControl],
    sleeps: SleepRecorder,
) -> None:
    secret = "rp-CANARY-5521"
    control = make_pod_control(fake_api.graphql_url, api_key=secret)
    with pytest.raises(RejectedByApi, match="check RUNPOD_API_KEY") as caught:
        control.terminate()
    assert secret not in str(caught.value)
    assert secret not in repr(control)
    assert sleeps.waits == []


def test_the_fake_graphql_also_reads_the_seed_s_inline_pod_id(
    fake_api: FakeJobApiServer, http: requests.Session
) -> None:
    query = 'mutation { podTerminate(input: {podId: "pod-\\"q\\""}) }'
    reply = http.post(fake_api.graphql_url, json={"query": query},
                      headers={"Authorization": f"Bearer {POD_API_KEY}"}, timeout=5)
    assert reply.json() == {"data": {"podTerminate": None}}
    assert fake_api.terminations == ['pod-"q"']


