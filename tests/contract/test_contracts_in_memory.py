"""The recorded exchanges against the in-memory job API: the fake the unit tests and the local
run use must conclude what the real adapter concludes (a "verified fake").

Each job-API recording's ``fake`` state (jobs queued, taken, cancelled) is set up in an
``InMemoryJobApi`` and the recording's port call is made on it; the conclusion must be the one
the recording ``expect``s. Recordings that need an HTTP fault (a 429, a 500) describe what only
a server can do and are left to the HTTP fake (``test_contracts.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import domain.errors
from adapters.clock import ManualClock
from adapters.local.job_api import InMemoryJobApi
from adapters.local.pod_control import RecordingPodControl
from domain.ports import JobApi, JobStopSource, PodControl
from tests.contract.test_contracts import CONTRACTS, call, check_conclusion, load

IN_MEMORY = [p for p in CONTRACTS
             if load(p)["adapter"] is not None and "faults" not in load(p)["fake"]]


def prepared(state: dict[str, Any], *, batch: bool) -> InMemoryJobApi:
    api = InMemoryJobApi(ManualClock(), poll_timeout=0.0)
    if batch:  # a job-take-batch URL: one take hands them all out
        api.submit_batch(state.get("jobs", []))
    else:
        api.submit_many(state.get("jobs", []))
    if "take_as" in state:
        while api.queued:
            api.take(job_in_progress=False)
    for job_id in state.get("cancel", []):
        api.request_stop(job_id)
    return api


def test_most_recordings_apply_to_the_in_memory_fake() -> None:
    assert len(IN_MEMORY) >= 10


@pytest.mark.parametrize("path", IN_MEMORY, ids=[p.stem for p in IN_MEMORY])
def test_the_in_memory_fake_concludes_what_the_recording_expects(path: Path) -> None:
    contract = load(path)
    if contract["adapter"] == "RunPodPodControl":
        control: PodControl = RecordingPodControl()
        outcome = call(control, contract["call"])
        check_conclusion(outcome, None, contract)
        return
    api = prepared(contract["fake"], batch="job-take-batch" in contract["setup"]["take_url"])
    as_port: JobApi = api  # the typed assignments are the conformance check (mypy)
    as_stop_source: JobStopSource = api
    assert callable(as_port.take) and callable(as_stop_source.jobs_to_stop)
    outcome, raised = None, None
    try:
        outcome = call(api, contract["call"])
    except domain.errors.PodworkerError as exc:
        raised = exc
    check_conclusion(outcome, raised, contract)
