"""Calls on the fake platform's routes as a worker makes them, for its integration tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from fakeplatform import FakeJobApiServer
from tests.support.http_fixtures import API_KEY, WORKER_ID

AUTH = {"Authorization": API_KEY}


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """One keep-alive HTTP session for the test."""
    with requests.Session() as session:
        yield session


def take(http: requests.Session, fake: FakeJobApiServer, worker: str = WORKER_ID,
         **params: str) -> requests.Response:
    return http.get(f"{fake.url}/v2/fake/job-take/{worker}", params=params, headers=AUTH,
                    timeout=10)


def done(http: requests.Session, fake: FakeJobApiServer, job_id: str, body: Any,
         worker: str = WORKER_ID, **headers: str) -> requests.Response:
    return http.post(f"{fake.url}/v2/fake/job-done/{worker}/{job_id}?isStream=false",
                     data=json.dumps(body), headers={**AUTH, **headers}, timeout=10)


def untimed(answer: dict[str, Any] | None) -> dict[str, Any]:
    """A status answer without its timing fields (delayTime, executionTime, workerId)."""
    assert answer is not None
    return {k: v for k, v in answer.items()
            if k not in ("delayTime", "executionTime", "workerId")}


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(target()), daemon=True)
    thread.start()
    return thread, out

