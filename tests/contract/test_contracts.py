"""Every recording in ``contracts/``, both ways: the real adapters and the fake job API.

(a) The real adapter, built from the recording's ``setup``, talks to a replay server serving
the recorded answer: the one request it sends must match the recording, and it must conclude
what ``expect`` says. (b) The fake job API, put in the recording's ``fake`` state, receives the
recorded request and must answer the same way (status, recorded headers, body shape). See
``contracts/README.md``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

import domain.errors
from adapters.clock import ManualClock
from adapters.runpod.job_api import RunPodJobApi
from adapters.runpod.pod_control import RunPodPodControl
from domain.job import JobResult
from domain.ports import JobApi, JobStopSource, PodControl
from fakeplatform import FakeJobApiServer
from tests.support.http_fixtures import SleepRecorder
from tests.support.replay_server import Recorded, ReplayServer

CONTRACTS = sorted((Path(__file__).resolve().parents[2] / "contracts").glob("*.json"))
# the recordings of an exchange podworker's adapters make (the others: RunPod's SDK's client
# calls and the worker calls podworker has no adapter method for yet, checked on the fake only)
ADAPTER_CONTRACTS = [p for p in CONTRACTS if json.loads(p.read_text(encoding="utf-8"))["adapter"]]


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def test_the_contract_folder_holds_every_case_the_issue_lists() -> None:
    names = {p.stem for p in CONTRACTS}
    assert {
        "take_200_object", "take_200_list", "take_204", "take_400", "take_429_retry_after",
        "take_500", "result_output", "result_error", "progress", "ping_idle", "ping_busy",
        "job_stop_204", "job_stop_ids", "pod_terminate_ok", "pod_terminate_graphql_error",
    } <= names


def build_adapter(
    contract: dict[str, Any], base: str, sleep: SleepRecorder
) -> RunPodJobApi | RunPodPodControl:
    setup = {k: v.replace("$BASE", base) if isinstance(v, str) else v
             for k, v in contract["setup"].items()}
    if contract["adapter"] == "RunPodPodControl":
        control: PodControl = RunPodPodControl(
            setup["api_url"], setup["api_key"], setup["pod_id"], timeout=2.0, sleep=sleep
        )
        assert isinstance(control, RunPodPodControl)
        return control
    api = RunPodJobApi(
        take_url=setup["take_url"], result_url=setup["result_url"],
        ping_url=setup.get("ping_url"), api_key=setup["api_key"],
        stream_url=setup.get("stream_url"),
        worker_id=setup["worker_id"], connect_timeout=2.0, read_timeout=2.0, take_timeout=2.0,
        clock=ManualClock(), sleep=sleep,
    )
    as_port: JobApi = api  # the typed assignments are the conformance check (mypy)
    as_stop_source: JobStopSource = api
    assert callable(as_port.take) and callable(as_stop_source.jobs_to_stop)
    return api


def call(adapter: Any, spec: dict[str, Any]) -> Any:
    method, args = spec["method"], spec["args"]
    if method == "post_result":
        streamed = bool(args.get("streamed"))
        result = (JobResult(args["job_id"], error=args["error"], streamed=streamed)
                  if "error" in args
                  else JobResult(args["job_id"], output=args["output"], streamed=streamed))
        return adapter.post_result(result)
    return getattr(adapter, method)(**args)


def check_request_matches(captured: Any, recorded: dict[str, Any]) -> None:
    want = urlsplit(recorded["url"])
    assert captured.method == recorded["method"]
    assert captured.path == want.path
    assert captured.query == parse_qs(want.query, keep_blank_values=True)
    for name, value in recorded["headers"].items():
        assert captured.headers.get(name.lower()) == value, f"header {name}"
    assert captured.json() == recorded["json"]


def check_conclusion(outcome: Any, raised: Exception | None, contract: dict[str, Any]) -> None:
    expect = contract["expect"]
    secret = contract["setup"]["api_key"]
    if "raises" in expect:
        assert raised is not None, f"expected {expect['raises']}, got {outcome!r}"
        assert isinstance(raised, getattr(domain.errors, expect["raises"]))
        if "retry_after" in expect:
            assert getattr(raised, "retry_after", None) == expect["retry_after"]
        if "message_contains" in expect:
            assert expect["message_contains"] in str(raised)
        assert secret not in str(raised)
        return
    assert raised is None, f"unexpected {raised!r}"
    if "jobs" in expect:
        got = [{"id": j.id, "input": j.input, "problem": j.problem} for j in outcome]
        assert got == [{"problem": None, **j} for j in expect["jobs"]]
    elif "stop" in expect:
        assert outcome == expect["stop"]
    else:
        assert expect == {"accepted": True}
        assert outcome is None


@pytest.mark.parametrize("path", ADAPTER_CONTRACTS, ids=[p.stem for p in ADAPTER_CONTRACTS])
def test_the_real_adapter_sends_the_recorded_request_and_reads_the_answer_as_recorded(
    path: Path, replay: Callable[..., ReplayServer], sleeps: SleepRecorder
) -> None:
    contract = load(path)
    server = replay(Recorded.from_contract(contract["response"]))
    adapter = build_adapter(contract, server.url, sleeps)
    outcome, raised = None, None
    try:
        outcome = call(adapter, contract["call"])
    except domain.errors.PodworkerError as exc:
        raised = exc
    finally:
        adapter.close()
    assert len(server.captured) == 1, "one exchange, no retries"
    assert sleeps.waits == []
    check_request_matches(server.captured[0], contract["request"])
    check_conclusion(outcome, raised, contract)


def shape(value: Any) -> Any:
    """The JSON type tree of ``value``: what two answers must share to be 'the same shape'."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null"


def prepare_fake(fake: FakeJobApiServer, state: dict[str, Any], key: str | None) -> None:
    for payload in state.get("jobs", []):
        fake.submit_raw(payload)
    if "take_as" in state:
        while fake.stats()["queued"]:
            reply = fake.handle("GET", f"/v2/x/job-take/{state['take_as']}",
                                {"authorization": key or ""}, b"")
            assert reply.status == 200
    for job_id, chunks in state.get("chunks", {}).items():
        for chunk in chunks:
            assert fake.add_chunk(job_id, chunk)
    for job_id, body in state.get("results", {}).items():
        assert fake.finish(job_id, body)
    for job_id in state.get("cancel", []):
        assert fake.cancel(job_id) == "CANCELLED"
    if "faults" in state:
        answer = requests.post(f"{fake.url}/_faults", json=state["faults"], timeout=2)
        assert answer.status_code == 200, answer.text
    if "serve_as" in state:  # a worker that answers the next job with its input
        def serve() -> None:
            for _ in range(200):  # long polls of 0.05 s: up to 10 s for the job to come
                for payload in fake.hand_out(state["serve_as"], 1):
                    fake.finish(payload["id"], {"output": payload["input"]})
                    return

        threading.Thread(target=serve, daemon=True).start()


def fake_keys(contract: dict[str, Any]) -> tuple[str | None, str | None]:
    """(job API key, pod API key) the fake is started with for a recording."""
    if contract["adapter"] is None:  # RunPod's SDK: a raw key on the worker's routes
        auth = contract["request"]["headers"].get("Authorization", "")
        return (None if auth.startswith("Bearer ") or not auth else auth), None
    key = contract["setup"]["api_key"]
    return (None, key) if contract["adapter"] == "RunPodPodControl" else (key, None)


@pytest.mark.parametrize("path", CONTRACTS, ids=[p.stem for p in CONTRACTS])
def test_the_fake_job_api_answers_the_recorded_request_as_recorded(path: Path) -> None:
    contract = load(path)
    key, pod_key = fake_keys(contract)
    with FakeJobApiServer(long_poll_s=0.05, api_key=key, pod_api_key=pod_key) as fake:
        prepare_fake(fake, contract["fake"], key)
        request, recorded = contract["request"], contract["response"]
        body = None if request["json"] is None else json.dumps(request["json"]).encode()
        answer = requests.request(
            request["method"], fake.url + request["url"], data=body,
            headers=request["headers"], timeout=2,
        )
    assert answer.status_code == recorded["status"], answer.text
    for name, value in recorded["headers"].items():
        if name.lower() == "content-type":
            assert answer.headers.get(name, "").split(";")[0] == value
        else:
            assert answer.headers.get(name) == value, name
    if 200 <= recorded["status"] < 300:
        want = shape(recorded["json"]) if "json" in recorded else None
        got = shape(answer.json()) if answer.content else None
        assert got == want
