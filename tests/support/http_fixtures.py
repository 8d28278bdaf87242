"""Fixtures for tests that speak HTTP on loopback: the fake job API, replay servers, adapters.

Registered in ``tests/conftest.py``. Nothing here sleeps: retry policies get a ``SleepRecorder``
and waits are on events or the fake's ``wait_until``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from adapters.clock import ManualClock
from adapters.runpod.job_api import RunPodJobApi
from adapters.runpod.pod_control import RunPodPodControl
from fakeplatform import FakeJobApiServer
from tests.support.replay_server import Recorded, ReplayServer

API_KEY = "test-job-api-key-3c9d"
POD_API_KEY = "test-runpod-api-key-7e21"
WORKER_ID = "worker-1"
FAST_POLL_S = 0.1


class SleepRecorder:
    """A ``sleep`` for retry policies that records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def fake_api() -> Iterator[FakeJobApiServer]:
    """A running fake job API: short long polls, the API keys ``API_KEY``/``POD_API_KEY``."""
    with FakeJobApiServer(
        long_poll_s=FAST_POLL_S, api_key=API_KEY, pod_api_key=POD_API_KEY
    ) as server:
        yield server


@pytest.fixture
def replay() -> Iterator[Callable[..., ReplayServer]]:
    """``replay(Recorded(...), ...)`` starts a replay server, stopped after the test."""
    servers: list[ReplayServer] = []

    def make(*responses: Recorded) -> ReplayServer:
        server = ReplayServer(*responses).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL where nothing listens (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def templates_at(base: str) -> dict[str, str]:
    """RunPod-style URL templates (with a ``?`` already) rooted at ``base``."""
    return {
        "take_url": f"{base}/v2/fake/job-take/$ID?gpu=fake",
        "result_url": f"{base}/v2/fake/job-done/$RUNPOD_POD_ID/$ID?gpu=fake",
        "ping_url": f"{base}/v2/fake/ping/$RUNPOD_POD_ID?gpu=fake",
    }


@pytest.fixture
def make_job_api(sleeps: SleepRecorder) -> Iterator[Callable[..., RunPodJobApi]]:
    """``make_job_api(base_url, **overrides)``: a ``RunPodJobApi`` on ``base_url`` with the
    test key, a manual clock and the recording sleep; closed after the test."""
    made: list[RunPodJobApi] = []

    def make(base: str, **overrides: Any) -> RunPodJobApi:
        kwargs: dict[str, Any] = {
            **templates_at(base),
            "api_key": API_KEY,
            "worker_id": WORKER_ID,
            "connect_timeout": 2.0,
            "read_timeout": 2.0,
            "take_timeout": 5.0,
            "clock": ManualClock(),
            "sleep": sleeps,
            **overrides,
        }
        api = RunPodJobApi(**kwargs)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


@pytest.fixture
def make_pod_control(sleeps: SleepRecorder) -> Iterator[Callable[..., RunPodPodControl]]:
    """``make_pod_control(api_url, **overrides)`` with ``POD_API_KEY`` and the recording sleep."""
    made: list[RunPodPodControl] = []

    def make(api_url: str, **overrides: Any) -> RunPodPodControl:
        kwargs: dict[str, Any] = {"timeout": 2.0, "sleep": sleeps, **overrides}
        api_key = kwargs.pop("api_key", POD_API_KEY)
        pod_id = kwargs.pop("pod_id", WORKER_ID)
        control = RunPodPodControl(api_url, api_key, pod_id, **kwargs)
        made.append(control)
        return control

    yield make
    for control in made:
        control.close()
