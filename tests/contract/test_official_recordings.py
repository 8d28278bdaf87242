"""The recordings in ``contracts/`` that come from RunPod's own code, checked against it.

RunPod's SDK 1.12.0 (worker and client) runs against the fake platform, which notes every
exchange. Each recording whose ``source`` names this file must match what the SDK sends today
(method, path, query, ``Authorization``, body) and what the fake answers (status, body shape).
``RECORD_CONTRACTS=1`` writes the files anew instead (then ``test_contracts.py`` checks them
against podworker's adapters and the fake, as every recording).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.contract.test_contracts import shape
from tests.support.official_runpod import (
    SDK_API_KEY,
    Exchange,
    RecordingPlatform,
    SdkWorker,
    route_of,
    run_sdk_client,
    runpod_python,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
SOURCE = ("captured from RunPod's SDK (runpod 1.12.0) against fakeplatform by "
          "tests/contract/test_official_recordings.py")
POD = "pod-7x9k2m"
QUERY = "gpu=NVIDIA+RTX+A5000"
J1, J2, J4 = ("8f3c2a1e-6b7d-4e9f-a1b2-c3d4e5f6a7b8-u1", "0d9e8f7a-1b2c-4d3e-9f8a-7b6c5d4e3f2a-u1",
              "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d-u1")
FOX = {"prompt": "a red fox in the snow", "num_inference_steps": 25, "seed": 42}


def capture(python: Path, tmp: Path) -> tuple[RecordingPlatform, dict[str, str]]:
    """Run the SDK's worker and client through every exchange recorded; the platform and the
    client's job ids by name."""
    platform = RecordingPlatform(long_poll_s=0.5, api_key=SDK_API_KEY, runsync_wait_s=30)
    platform.start()
    take = f"{platform.url}/v2/ep-contract/job-take/$ID?{QUERY}"
    ids: dict[str, str] = {}
    try:
        # no worker yet: the queue's side of the client API; one job failed by hand to retry
        failed = platform.submit({"prompt": "retry me"}, "job-failed")
        platform.hand_out("pod-elsewhere", 1)
        platform.finish(failed, {"error": "CUDA out of memory"})
        answers = run_sdk_client(python, platform, tmp, [
            {"call": "run", "job": "a", "input": {"prompt": "queued"}},
            {"call": "cancel", "job": "a"},
            {"call": "run", "job": "b", "input": {"prompt": "purged"}},
            {"call": "purge_queue"},
            {"call": "retry", "job": "f", "id": failed},
        ])
        platform.purge()
        # a plain handler: take, progress, output, error; the client's run_sync and status
        platform.submit(dict(FOX, progress=True), J1)
        platform.submit({"fail": "CUDA out of memory while running the job"}, J2)
        worker = SdkWorker(python, platform, tmp, "plain", pod_id=POD, template=take)
        try:
            assert platform.wait_until(lambda p: {J1, J2} <= set(p.results), timeout=60)
            answers = run_sdk_client(python, platform, tmp, [
                {"call": "run_sync", "input": {"prompt": "owl"}},
                {"call": "run", "job": "d", "input": {"prompt": "done"}},
                {"call": "output", "job": "d"},
                {"call": "status_raw", "job": "d"},
            ])
            ids["done"] = answers[3]["id"]
            platform.wait_until(lambda p: len(p.seen("job-stop")) >= 2, timeout=30)
        finally:
            worker.close()
        # a generator handler: stream chunks, the final result, a job stopped by the platform
        worker = SdkWorker(python, platform, tmp, "stream", pod_id=POD, template=take)
        try:
            answers = run_sdk_client(python, platform, tmp, [
                {"call": "run", "job": "s", "input": {"chunks": 2}},
                {"call": "stream", "job": "s"},
                {"call": "health"},
            ])
            platform.submit({"chunks": 1, "hang": True}, J4)
            assert platform.wait_until(lambda p: (J4, {"i": 0, "text": "chunk-0"})
                                       in p.streamed, timeout=60)
            platform.cancel(J4)
            worker.wait_for_log("Job stopped.")
        finally:
            worker.close()
        # a concurrency modifier: job-take-batch
        for i in range(3):
            platform.submit({"i": i}, f"batch-{i}")
        worker = SdkWorker(python, platform, tmp, "plain", pod_id=POD, template=take,
                           concurrency=3)
        try:
            assert platform.wait_until(
                lambda p: all(f"batch-{i}" in p.results for i in range(3)), timeout=60)
        finally:
            worker.close()
    finally:
        platform.stop()
    return platform, ids


# --- from exchanges to recordings ------------------------------------------------------------
def request_of(e: Exchange) -> dict[str, Any]:
    auth = e.headers.get("authorization")
    return {"method": e.method, "url": e.target,
            "headers": {"Authorization": auth} if auth is not None else {},
            "json": e.request_json()}


def response_of(e: Exchange) -> dict[str, Any]:
    answer: dict[str, Any] = {"status": e.reply.status, "headers": {}}
    if e.reply.body:
        answer["headers"] = {"Content-Type": e.reply.content_type}
        answer["json"] = e.reply_json()
    return answer


def first(platform: RecordingPlatform, route: str,
          test: Callable[[Exchange], bool] = lambda e: True) -> Exchange:
    found = [e for e in platform.seen(route) if test(e)]
    assert found, f"no {route} exchange of that kind was captured"
    return found[0]


def job_api(name: str, about: str, e: Exchange, call: dict[str, Any], expect: dict[str, Any],
            fake: dict[str, Any], take_route: str = "job-take",
            extra_query: str = "") -> dict[str, Any]:
    base = "$BASE/v2/ep-contract"
    return {
        "name": name, "about": about, "source": SOURCE, "adapter": "RunPodJobApi",
        "setup": {
            "worker_id": POD, "api_key": SDK_API_KEY,
            "take_url": f"{base}/{take_route}/$ID?{QUERY}{extra_query}",
            "result_url": f"{base}/job-done/$RUNPOD_POD_ID/$ID?{QUERY}",
            "ping_url": f"{base}/ping/$RUNPOD_POD_ID?{QUERY}",
            "stream_url": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?{QUERY}",
        },
        "call": call, "request": request_of(e), "response": response_of(e), "expect": expect,
        "fake": fake,
    }


def exchange_only(name: str, about: str, e: Exchange, fake: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "about": about, "source": SOURCE, "adapter": None,
            "request": request_of(e), "response": response_of(e), "fake": fake}


def recordings(platform: RecordingPlatform, ids: dict[str, str]) -> dict[str, dict[str, Any]]:
    def body(e: Exchange) -> Any:
        return e.request_json() or {}

    def done_for(job_id: str, progress: bool = False) -> Exchange:
        return first(platform, "job-done", lambda e: e.path.endswith(f"/{job_id}")
                     and (body(e).get("status") == "IN_PROGRESS") == progress)

    taken = {"jobs": [{"id": J1, "input": dict(FOX, progress=True)}], "take_as": POD}
    t200 = first(platform, "job-take", lambda e: e.reply.status == 200)
    t204 = first(platform, "job-take", lambda e: e.reply.status == 204)
    batch = first(platform, "job-take-batch", lambda e: e.reply.status == 200)
    out, err, prog = done_for(J1), done_for(J2), done_for(J1, progress=True)
    stop204 = first(platform, "job-stop", lambda e: e.reply.status == 204)
    stop200 = first(platform, "job-stop", lambda e: e.reply.status == 200)
    streamed = first(platform, "job-stream")
    final = first(platform, "job-done", lambda e: e.query.get("isStream") == ["true"])
    stream_job = streamed.path.rsplit("/", 1)[1]
    done_job = ids["done"]
    found = {
        "take_200_object": job_api(
            "take: 200 with one job", "The SDK's take with one job queued: the job as an object.",
            t200, {"method": "take", "args": {"job_in_progress": False}},
            {"jobs": [t200.reply_json()]}, {"jobs": [t200.reply_json()]}),
        "take_204": job_api(
            "take: 204, no job", "The SDK's take on an empty queue, after the long poll.",
            t204, {"method": "take", "args": {"job_in_progress": t204.query[
                "job_in_progress"] == ["1"]}}, {"jobs": []}, {}),
        "take_batch_sdk": job_api(
            "take: job-take-batch with batch_size", "The SDK with a concurrency modifier of 3 "
            "takes three queued jobs in one request.", batch,
            {"method": "take", "args": {"job_in_progress": False}},
            {"jobs": batch.reply_json()}, {"jobs": batch.reply_json()},
            take_route="job-take-batch", extra_query="&batch_size=3"),
        "result_output": job_api(
            "result: output", "A successful job's final result, as the SDK posts it.", out,
            {"method": "post_result", "args": {"job_id": J1, **body(out)}},
            {"accepted": True}, taken),
        "result_error": job_api(
            "result: error", "A handler that returned {\"error\": ...}: the SDK posts the "
            "message as a string.", err,
            {"method": "post_result", "args": {"job_id": J2, **body(err)}}, {"accepted": True},
            {"jobs": [{"id": J2, "input": {"fail": body(err)["error"]}}], "take_as": POD}),
        "progress": job_api(
            "progress", "progress_update: job-done with status IN_PROGRESS.", prog,
            {"method": "post_progress", "args": {"job_id": J1, "progress": body(prog)["output"]}},
            {"accepted": True}, taken),
        "job_stop_204": job_api(
            "job-stop: 204", "The SDK's stop poll with nothing to stop.", stop204,
            {"method": "jobs_to_stop", "args": {}}, {"stop": []}, {}),
        "job_stop_ids": job_api(
            "job-stop: jobs to stop", "A job cancelled on the platform while the SDK ran it.",
            stop200, {"method": "jobs_to_stop", "args": {}}, {"stop": [J4]},
            {"jobs": [{"id": J4, "input": {"chunks": 1, "hang": True}}], "take_as": POD,
             "cancel": [J4]}),
        "stream_chunk": job_api(
            "stream: one chunk", "A generator handler's chunk, posted to "
            "RUNPOD_WEBHOOK_POST_STREAM ($ID filled; the SDK appends isStream=false).",
            streamed, {"method": "post_stream", "args": {"job_id": stream_job,
                                                         "chunk": body(streamed)["output"]}},
            {"accepted": True},
            {"jobs": [{"id": stream_job, "input": {"chunks": 2}}], "take_as": POD}),
        "result_stream_final": job_api(
            "result: after a stream", "The final result of a generator handler: job-done with "
            "isStream=true; the output is empty without return_aggregate_stream.", final,
            {"method": "post_result", "args": {"job_id": final.path.rsplit("/", 1)[1],
                                               "output": [], "streamed": True}},
            {"accepted": True},
            {"jobs": [{"id": final.path.rsplit("/", 1)[1], "input": {"chunks": 2}}],
             "take_as": POD}),
        "ping_sdk": exchange_only(
            "ping: the SDK's heartbeat", "The SDK's ping adds runpod_version to the query.",
            first(platform, "ping"), {}),
        "client_run": exchange_only(
            "client: run", "runpod.Endpoint.run", first(platform, "run"), {}),
        "client_cancel": exchange_only(
            "client: cancel a queued job", "Job.cancel", first(platform, "cancel"),
            {"jobs": [{"id": "job-1", "input": {"prompt": "queued"}}]}),
        "client_purge_queue": exchange_only(
            "client: purge the queue", "Endpoint.purge_queue", first(platform, "purge-queue"),
            {"jobs": [{"id": "job-2", "input": {"prompt": "purged"}}]}),
        "client_retry": exchange_only(
            "client: retry a failed job", "POST /retry/<id> with the client's own session "
            "(Endpoint has no retry method in 1.12).", first(platform, "retry"),
            {"jobs": [{"id": "job-failed", "input": {}}], "take_as": "pod-elsewhere",
             "results": {"job-failed": {"error": "CUDA out of memory"}}}),
        "client_runsync": exchange_only(
            "client: run_sync", "Endpoint.run_sync: the answer once the job is done.",
            first(platform, "runsync"), {"serve_as": POD}),
        "client_status": exchange_only(
            "client: status of a finished job", "Job.status / Job.output read GET /status.",
            first(platform, "status", lambda e: e.path.endswith(f"/{done_job}")
                  and (e.reply_json() or {}).get("status") == "COMPLETED"),
            {"jobs": [{"id": done_job, "input": {"prompt": "done"}}], "take_as": POD,
             "results": {done_job: {"output": {"prompt": "done"}}}}),
        "client_stream": exchange_only(
            "client: stream", "Job.stream polls GET /stream/<id> once a second: the chunks "
            "since the last call.", first(platform, "stream", lambda e: bool(
                (e.reply_json() or {}).get("stream"))),
            {"jobs": [{"id": stream_job, "input": {"chunks": 2}}], "take_as": POD,
             "chunks": {stream_job: [{"i": 0, "text": "chunk-0"}, {"i": 1, "text": "chunk-1"}]},
             "results": {stream_job: {"output": []}}}),
        "client_health": exchange_only(
            "client: health", "Endpoint.health", first(platform, "health"), {}),
    }
    return found


def loose_shape(value: Any) -> Any:
    """``shape``, with a list as the set of its elements' shapes (how many chunks one poll of
    /stream gets depends on timing; what a chunk looks like does not)."""
    if isinstance(value, list):
        return sorted({json.dumps(loose_shape(v), sort_keys=True) for v in value})
    if isinstance(value, dict):
        return {k: loose_shape(v) for k, v in value.items()}
    return shape(value)


def comparable(recording: dict[str, Any]) -> Any:
    """What must stay the same between two captures: the request, the answer's status and
    shape."""
    response = recording["response"]
    return (recording["request"], response["status"], loose_shape(response.get("json")))


def test_the_recordings_from_runpods_sdk_match_what_it_sends_today(tmp_path: Path) -> None:
    python = runpod_python()
    platform, ids = capture(python, tmp_path)
    assert platform.duplicates == [] and platform.late_stream == []
    captured = recordings(platform, ids)
    if os.environ.get("RECORD_CONTRACTS") == "1":
        for name, recording in captured.items():
            (CONTRACTS / f"{name}.json").write_text(json.dumps(recording, indent=2) + "\n")
    for name, recording in captured.items():
        path = CONTRACTS / f"{name}.json"
        assert path.exists(), f"{path} is missing: run with RECORD_CONTRACTS=1"
        stored = json.loads(path.read_text())
        assert stored.get("source") == SOURCE, name
        assert comparable(stored) == comparable(recording), name


def test_every_recording_says_where_it_came_from() -> None:
    for path in sorted(CONTRACTS.glob("*.json")):
        assert json.loads(path.read_text()).get("source"), path.name
    assert route_of("/v2/ep/job-take/w") == "job-take"
